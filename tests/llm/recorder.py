"""A recording pass-through proxy in front of one llama-server, for the real-model lane.

It forwards every request unchanged and streams the answer back chunk by chunk, and remembers what
the backend was asked (the JSON body, a few headers) and what it reported (its ``usage``, from the
JSON answer or the last SSE chunk that carried one). A client that goes away closes the upstream
connection too, so llama-server sees the disconnect just as it would behind Envoy.

    python -m tests.llm.recorder --upstream http://127.0.0.1:P --port Q --ready-file F

``GET /_rec/requests`` lists the records, ``DELETE /_rec/requests`` clears them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


def usage_from_sse(buf: bytes) -> dict[str, Any] | None:
    usage = None
    for line in buf.decode(errors="replace").splitlines():
        if line.startswith("data: ") and line[6:].strip() not in ("", "[DONE]"):
            try:
                chunk = json.loads(line[6:])
            except ValueError:
                continue
            if isinstance(chunk, dict) and chunk.get("usage"):
                usage = chunk["usage"]
    return usage


class Recorder:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.records: list[dict[str, Any]] = []
        self.session: ClientSession | None = None

    async def start(self, app: web.Application) -> None:
        self.session = ClientSession(timeout=ClientTimeout(total=None, sock_connect=5), auto_decompress=False)

    async def close(self, app: web.Application) -> None:
        if self.session:
            await self.session.close()

    async def list_records(self, request: web.Request) -> web.Response:
        return web.json_response(self.records)

    async def clear(self, request: web.Request) -> web.Response:
        self.records.clear()
        return web.json_response({"cleared": True})

    async def forward(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record: dict[str, Any] = {
            "method": request.method,
            "path": request.path_qs,
            "body": body,
            "headers": {k.lower(): v for k, v in request.headers.items() if k.lower().startswith("x-")},
            "status": None,
            "usage": None,
            "completed": False,
        }
        if request.path.startswith("/v1/"):
            self.records.append(record)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self.session.request(request.method, self.upstream + request.path_qs, data=raw, headers=headers) as up:
            record["status"] = up.status
            kept = {k: v for k, v in up.headers.items() if k.lower() not in HOP_BY_HOP}
            resp = web.StreamResponse(status=up.status, headers=kept)
            await resp.prepare(request)
            seen = bytearray()
            # If the client is gone, write() raises and leaving this block closes the upstream
            # connection: llama-server notices and frees the slot.
            async for chunk in up.content.iter_any():
                seen += chunk
                await resp.write(chunk)
            await resp.write_eof()
        if "text/event-stream" in up.headers.get("content-type", ""):
            record["usage"] = usage_from_sse(bytes(seen))
        else:
            with contextlib.suppress(ValueError, AttributeError):
                record["usage"] = json.loads(seen).get("usage")
        record["completed"] = True
        return resp


async def serve(upstream: str, port: int, ready_file: Path | None) -> None:
    rec = Recorder(upstream)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.on_startup.append(rec.start)
    app.on_cleanup.append(rec.close)
    app.router.add_get("/_rec/requests", rec.list_records)
    app.router.add_delete("/_rec/requests", rec.clear)
    app.router.add_route("*", "/{tail:.*}", rec.forward)
    # Cancel the handler when the client disconnects, so the upstream request is dropped at once.
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    if ready_file:
        ready_file.write_text(json.dumps({"port": port}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ready-file", type=Path, default=None)
    args = ap.parse_args()
    asyncio.run(serve(args.upstream, args.port, args.ready_file))


if __name__ == "__main__":
    main()
