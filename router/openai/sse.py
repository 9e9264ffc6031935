"""Server-sent events framing for streamed chat completions."""

from __future__ import annotations

import orjson

DONE = b"data: [DONE]\n\n"


def event(payload: dict | bytes) -> bytes:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return b"data: " + data + b"\n\n"


def comment(text: str) -> bytes:
    # Comment lines keep the connection visibly alive; OpenAI clients ignore them.
    return b": " + text.replace("\n", " ").encode() + b"\n\n"


def chunk(completion_id: str, model: str, created: int, delta: dict, finish_reason: str | None = None) -> bytes:
    return event(
        {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
    )


def usage_chunk(completion_id: str, model: str, created: int, usage: dict) -> bytes:
    return event(
        {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }
    )
