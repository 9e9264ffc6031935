"""Bodies for looper sub-calls: the conversation as text turns (no tools), and the request fields a
sub-call may inherit."""

from __future__ import annotations

from typing import Any

# Request fields that belong to the client's final answer only, or to the router.
NOT_FOR_SUBCALLS = (
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "stream",
    "stream_options",
    "plugins",
    "n",
    "response_format",
    "functions",
    "function_call",
    "logprobs",
    "top_logprobs",
)
# Fields a final (client-facing) call must not inherit either.
NOT_FOR_FINAL = ("stream", "stream_options", "plugins", "n")


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("text"))
    return content if isinstance(content, str) else ""


def text_history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as plain text turns: sub-calls get no tools, but must still see earlier tool
    calls and their results for multi-turn agent loops."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        role = msg.get("role")
        content = _text(msg.get("content"))
        if role == "assistant" and msg.get("tool_calls"):
            calls = "; ".join(
                f"{(c.get('function') or {}).get('name')}({(c.get('function') or {}).get('arguments')})"
                for c in msg["tool_calls"]
            )
            out.append({"role": "assistant", "content": (content + "\n" if content else "") + f"[called tools: {calls}]"})
        elif role in ("tool", "function"):
            out.append(
                {"role": "user", "content": f"[tool result {msg.get('tool_call_id') or msg.get('name') or ''}]: {content}"}
            )
        elif role == "developer":
            out.append({"role": "system", "content": content})
        else:
            out.append({"role": role, "content": content})
    return out


def original_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in text_history(messages))


def subcall_body(
    raw: dict[str, Any], *, max_completion_tokens: int | None = None, temperature: float | None = None
) -> dict[str, Any]:
    """A text-only sub-call over the conversation, with the looper's token and temperature knobs."""
    body = {k: v for k, v in raw.items() if k not in NOT_FOR_SUBCALLS}
    body["messages"] = text_history(raw.get("messages") or [])
    return with_knobs(body, max_completion_tokens=max_completion_tokens, temperature=temperature)


def final_body(
    raw: dict[str, Any], instructions: str | None, *, max_completion_tokens: int | None = None, temperature: float | None = None
) -> dict[str, Any]:
    """The client-facing call: the client's own fields (tools included) and history in native form,
    with the looper's instructions as a leading system message."""
    body = {k: v for k, v in raw.items() if k not in NOT_FOR_FINAL}
    history = list(raw.get("messages") or [])
    body["messages"] = ([{"role": "system", "content": instructions}] if instructions else []) + history
    return with_knobs(body, max_completion_tokens=max_completion_tokens, temperature=temperature)


def with_knobs(
    body: dict[str, Any], *, max_completion_tokens: int | None = None, temperature: float | None = None
) -> dict[str, Any]:
    body = dict(body)
    if max_completion_tokens is not None:
        body.pop("max_tokens", None)
        body["max_completion_tokens"] = max_completion_tokens
    if temperature is not None:
        body["temperature"] = temperature
    return body


def user_prompt(text: str, base: dict[str, Any]) -> dict[str, Any]:
    """A one-turn sub-call (judge, verifier) reusing ``base``'s knobs."""
    return {**base, "messages": [{"role": "user", "content": text}]}
