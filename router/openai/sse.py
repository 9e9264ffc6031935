"""Server-sent events framing for streamed chat completions."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel

DONE = b"data: [DONE]\n\n"


def event(payload: BaseModel | dict[str, Any] | bytes) -> bytes:
    if isinstance(payload, BaseModel):
        data = payload.model_dump_json(exclude_none=True).encode()
    elif isinstance(payload, bytes):
        data = payload
    else:
        data = orjson.dumps(payload)
    return b"data: " + data + b"\n\n"


def comment(text: str) -> bytes:
    # Comment lines keep the connection visibly alive; OpenAI clients ignore them.
    return b": " + text.replace("\n", " ").replace("\r", " ").encode() + b"\n\n"
