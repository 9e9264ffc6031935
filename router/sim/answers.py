"""What a simulated model says: deterministic text derived from the request, no transport here."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import orjson

ECHO_CHARS = 80
_FILLER = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do")
_WEATHER = re.compile(r"\bweather\b", re.IGNORECASE)
_PLACE = re.compile(r"\bin ([A-Z][\w-]*(?: [A-Z][\w-]*)*)")
# Panel answers carry `[model@backend]` tags; the judge names panelists from them.
_TAG = re.compile(r"\[([^\s\[\]@]+)@[^\s\[\]]+\]")

JudgeKind = Literal["valid", "broken"]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON object, serialised, as OpenAI sends it


@dataclass(frozen=True)
class Answer:
    content: str | None
    tool_call: ToolCall | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def count_tokens(text: str) -> int:
    """Whitespace words: crude, but deterministic and free."""
    return len(text.split())


def message_text(message: Any) -> str:
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def build_answer(
    body: dict[str, Any],
    *,
    served_model: str,
    backend: str,
    default_max_tokens: int,
    judge: JudgeKind | None,
    confidence: float = 0.9,
    fixed: str = "",
    scripted: dict[str, str] | None = None,
) -> Answer:
    messages: list[Any] = body.get("messages") or []
    prompt_tokens = sum(count_tokens(message_text(m)) for m in messages)
    tag = f"[{served_model}@{backend}]"
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    user_text = next((message_text(m) for m in reversed(messages) if _role(m) == "user"), "")

    # A judge prompt asks for the analysis in the request's last user turn; a synthesis prompt only
    # carries the analysis in its system message, so it gets a normal answer.
    if judge and _role(last) == "user" and "consensus" in user_text.lower():
        content = _judge_content(tag, messages, judge)
        return Answer(content, None, "stop", prompt_tokens, count_tokens(content))

    # A self-verification prompt asks for a {"confidence": ...} verdict: give the model's configured one.
    if _role(last) == "user" and '"confidence"' in user_text and "reason" in user_text:
        content = orjson.dumps({"confidence": confidence, "reason": f"simulated verdict of {tag}"}).decode()
        return Answer(content, None, "stop", prompt_tokens, count_tokens(content))

    tool = _pick_tool(body, last)
    if tool is not None:
        call = ToolCall(f"call_{uuid.uuid4().hex[:24]}", tool[0], _tool_arguments(tool[1], user_text))
        return Answer(None, call, "tool_calls", prompt_tokens, count_tokens(f"{call.name} {call.arguments}"))

    first_user = next((message_text(m) for m in messages if _role(m) == "user"), "")
    fixed = next((a for k, a in (scripted or {}).items() if k in first_user), fixed)
    if fixed:
        return Answer(fixed, None, "stop", prompt_tokens, count_tokens(fixed))
    cap = _requested_cap(body)
    length = min(default_max_tokens, cap) if cap else default_max_tokens
    if _role(last) == "tool":
        words = [tag, "tool", "result:", *_snippet(message_text(last)).split()]
    else:
        words = [tag, "echo:", *_snippet(user_text).split()]
    words.extend(_FILLER[i % len(_FILLER)] for i in range(max(0, length - len(words))))
    words = words[:length]
    finish = "length" if cap and cap < default_max_tokens else "stop"
    return Answer(" ".join(words), None, finish, prompt_tokens, len(words))


def _role(message: Any) -> str | None:
    return message.get("role") if isinstance(message, dict) else None


def _snippet(text: str) -> str:
    return " ".join(text.split())[:ECHO_CHARS]


def _requested_cap(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _pick_tool(body: dict[str, Any], last: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(function name, function schema) when this request should get a tool call, else None."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    choice = body.get("tool_choice", "auto")
    # A tool result always gets a text answer, so demo loops end even with `required`.
    if not tools or choice == "none" or _role(last) == "tool":
        return None
    by_name = {t["function"].get("name"): t["function"] for t in tools}
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if isinstance(name, str):
            return name, by_name.get(name, {})
    first = tools[0]["function"]
    if choice == "required" or (_role(last) == "user" and _WEATHER.search(message_text(last))):
        return str(first.get("name", "tool")), first
    return None


def _tool_arguments(function: dict[str, Any], user_text: str) -> str:
    props = (function.get("parameters") or {}).get("properties") or {}
    place = _PLACE.search(user_text)
    text = place.group(1) if place else _snippet(user_text)[:40]
    return orjson.dumps({name: _sample_value(schema, text) for name, schema in props.items()}).decode()


def _sample_value(schema: Any, text: str) -> Any:
    schema = schema if isinstance(schema, dict) else {}
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    return {"integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}.get(kind, text)


def _judge_content(tag: str, messages: list[Any], judge: JudgeKind) -> str:
    if judge == "broken":
        return f"{tag} Here is my analysis: {{consensus: maybe, contradictions: [the panel"
    seen = dict.fromkeys(_TAG.findall(" ".join(message_text(m) for m in messages)))
    models = [*seen, "panel-a", "panel-b"][: max(2, len(seen))]
    first, second = models[0], models[1]
    analysis = {
        "consensus": [f"{first} and {second} agree on the main answer"],
        "contradictions": [
            {
                "topic": "level of detail",
                "stances": [{"model": first, "stance": "brief"}, {"model": second, "stance": "detailed"}],
            }
        ],
        "partial_coverage": [{"models": [first], "point": "edge cases"}],
        "unique_insights": [{"model": models[-1], "insight": "offers an alternative approach"}],
        "blind_spots": ["no sources cited"],
    }
    return f"{tag}\n```json\n{orjson.dumps(analysis, option=orjson.OPT_INDENT_2).decode()}\n```"
