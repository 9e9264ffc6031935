"""What the router decided to do with a request, independent of how Envoy is told."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field


@dataclass(slots=True)
class Route:
    """Let Envoy forward the request upstream, with these header changes and (maybe) a new body."""

    set_headers: dict[str, str]
    remove_headers: list[str] = field(default_factory=list)
    body: bytes | None = None  # None: body unchanged


@dataclass(slots=True)
class Respond:
    """Answer the client directly (errors, /v1/models, blocked, non-streamed Fusion)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass(slots=True)
class Stream:
    """Answer the client with a body produced over time (streamed Fusion, SSE)."""

    status: int
    headers: dict[str, str]
    chunks: AsyncGenerator[bytes, None]  # closing it (the client left) cancels whatever produces it
    content_type: str = "text/event-stream"


Action = Route | Respond | Stream
