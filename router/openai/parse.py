"""Parse a chat-completions body once: bytes → JSON dict → typed request, with OpenAI-shaped errors."""

from __future__ import annotations

import re
from typing import Any

import orjson
from pydantic import ValidationError

from router.openai.errors import OpenAIError, bad_request
from router.openai.types import ChatCompletionRequest

# Union members appear in pydantic's error location (`str`, `list[TextPart]`, `function-after[...]`);
# clients never wrote them, so the path leaves them out.
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|none|[a-z]+\[.*\]|[A-Z]\w*|function-\w+\[.*\])$")


def field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _UNION_MEMBER.match(str(part)):
            out += ("." if out else "") + str(part)
    return out


DEFAULT_MAX_DEPTH = 64


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests containers deeper than ``limit`` (iterative: no recursion to blow)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def _too_deep(limit: int) -> OpenAIError:
    return bad_request(f"The request body nests JSON deeper than {limit} levels, the gateway's limit.", "json_too_deep")


def parse_chat_body(body: bytes | bytearray, max_depth: int = DEFAULT_MAX_DEPTH) -> tuple[dict[str, Any], ChatCompletionRequest]:
    if not body.strip():
        raise bad_request("The request body is empty; expected a JSON chat-completions request.", "empty_body")
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise _too_deep(max_depth) from None
        try:
            bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request("The request body is not valid UTF-8.", "invalid_encoding") from None
        raise bad_request(f"The request body is not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(raw, dict):
        raise bad_request(f"The request body must be a JSON object, got {type(raw).__name__}.", "invalid_request_body")
    if json_depth_exceeds(raw, max_depth):
        raise _too_deep(max_depth)
    try:
        request = ChatCompletionRequest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = field_path(first["loc"])
        msg = "is required" if first["type"] == "missing" else first["msg"]
        if where == "messages" and first["type"] == "too_short":
            msg = "must contain at least one message"
        raise OpenAIError(400, f"Invalid request: `{where}` {msg}.", "invalid_request", param=where) from None
    return raw, request
