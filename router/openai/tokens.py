"""Token estimates before a model has counted them: about 4 characters or 0.75 words per token for
English BPE vocabularies (the signals' context estimate), plus a few tokens of chat framing per
message. Deterministic and cheap; budgets plan with them and then count what backends report."""

from __future__ import annotations

import re
from typing import Any

import orjson

_WORD = re.compile(r"\S+")
PER_MESSAGE = 4  # role and separators of the chat template
_COUNT_WORDS_BELOW = 256 * 1024


def approx_tokens(text: str) -> int:
    if not text:
        return 0
    words = len(_WORD.findall(text)) if len(text) < _COUNT_WORDS_BELOW else 0
    return max(int(words * 4 / 3), len(text) // 4, 1)


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def prompt_tokens(body: dict[str, Any]) -> int:
    """The prompt of a chat-completions body: every message's text (tool calls included) and tool definitions."""
    total = 0
    for m in body.get("messages") or []:
        if not isinstance(m, dict):
            continue
        total += PER_MESSAGE + approx_tokens(content_text(m.get("content")))
        for call in m.get("tool_calls") or []:
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                total += approx_tokens(f"{fn.get('name') or ''} {fn.get('arguments') or ''}")
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        total += approx_tokens(orjson.dumps(tools).decode())
    return total


def completion_cap(body: dict[str, Any]) -> int | None:
    """The completion cap a body asks for (``max_completion_tokens``, else ``max_tokens``)."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
