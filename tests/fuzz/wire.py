"""Send a request byte for byte and read whatever comes back (status 0 when nothing does).

The ``openai`` client and ``http.client`` refuse to send most of the inputs worth sending (bad
request lines, conflicting lengths, 60 KB headers), so cases are built as raw HTTP/1.1 and read
back with ``http.client.HTTPResponse`` on the socket.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    status: int  # 0: no HTTP response at all (connection closed or reset, or timed out)
    headers: list[tuple[str, str]] = field(default_factory=list)  # names lower-cased, in order
    body: bytes = b""
    error: str | None = None  # transport trouble: send failed, read failed, timed out
    elapsed_s: float = 0.0

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def json(self) -> Any:
        return json.loads(self.body)


def build(
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes | None,
    *,
    host: str = "127.0.0.1",
    content_length: bool = True,
) -> bytes:
    """A raw HTTP/1.1 request; ``content_length=False`` leaves framing to the given headers."""
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}", "connection: close"]
    names = {k.lower() for k, _ in headers}
    lines += [f"{k}: {v}" for k, v in headers]
    if body is not None and content_length and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def chunked(body: bytes, size: int = 64 * 1024) -> bytes:
    """``body`` as a chunked transfer-encoding payload."""
    out = bytearray()
    for i in range(0, len(body), size):
        part = body[i : i + size]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    out += b"0\r\n\r\n"
    return bytes(out)


def send(port: int, data: bytes, *, method: str = "POST", timeout: float = 60.0, host: str = "127.0.0.1") -> Reply:
    started = time.monotonic()
    reply = Reply(0)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        reply.error = f"connect: {exc}"
        return reply
    try:
        sock.settimeout(timeout)
        try:
            sock.sendall(data)
        except OSError as exc:  # the server may answer (413, 431) and close before reading it all
            reply.error = f"send: {exc.__class__.__name__}"
        try:
            resp = http.client.HTTPResponse(sock, method=method)
            resp.begin()
            reply.status = resp.status
            reply.headers = [(k.lower(), v) for k, v in resp.getheaders()]
            try:
                reply.body = resp.read()
            except http.client.IncompleteRead as exc:
                reply.body = exc.partial
                reply.error = "read: incomplete body"
        except (OSError, http.client.HTTPException) as exc:
            reply.error = (reply.error + "; " if reply.error else "") + f"read: {exc.__class__.__name__}: {exc}"[:200]
    finally:
        sock.close()
        reply.elapsed_s = time.monotonic() - started
    return reply


def post_json(port: int, payload: Any, *, headers: list[tuple[str, str]] | None = None, timeout: float = 60.0) -> Reply:
    body = json.dumps(payload).encode()
    return send(
        port,
        build("POST", "/v1/chat/completions", [("content-type", "application/json"), *(headers or [])], body),
        timeout=timeout,
    )


def sse_events(body: bytes) -> list[bytes]:
    """The ``data:`` payloads of an SSE body, in order."""
    out = []
    for line in body.split(b"\n"):
        line = line.strip()
        if line.startswith(b"data:"):
            out.append(line[5:].strip())
    return out
