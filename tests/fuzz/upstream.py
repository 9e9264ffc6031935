"""Fusion against a misbehaving backend: what real servers send that a gateway must survive.

A small aiohttp server (in a thread of this process) plays every backend of the default config, one
port each, with an API key configured for all of them. Per case it misbehaves at one Fusion stage
(``panel``, ``judge`` or ``synthesis``; the stage is recognised from the prompt the looper sends) and
answers normally at the others. It records every call, so the harness can check that each one carried
the backend's API key and that no key leaks back to the client.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.fuzz import hostile as T
from tests.fuzz.corpus import Builder, Case, chat, describe, user
from tests.fuzz.invariants import Violation
from tests.fuzz.runner import CaseResult, Target, load_default_config, run_case

KEY_ENV = "FUZZ_UPSTREAM_API_KEY"
_KEY = web.AppKey("configured_key", str)
STAGES = ("panel", "judge", "synthesis")

_ANALYSIS = {
    "consensus": ["the answers agree"],
    "contradictions": [],
    "partial_coverage": [],
    "unique_insights": [],
    "blind_spots": ["no sources"],
}


@dataclass(frozen=True)
class Misbehaviour:
    name: str
    expect: frozenset[int]  # for a non-streamed client request; streamed ones may also get 200 + error event
    note: str


_OK = frozenset({200})
_FAIL = frozenset({200, 502, 504})  # a clear upstream error, or an answer that worked around the bad stage
MISBEHAVIOURS: tuple[Misbehaviour, ...] = (
    Misbehaviour("chunked_5k", _OK, "a valid 5 KB answer written in 1 KB pieces (chunked transfer)"),
    Misbehaviour("one_write_128k", _OK, "a valid 128 KB answer in one write"),
    Misbehaviour("choices_strings", _FAIL, 'choices: ["x"]'),
    Misbehaviour("choices_empty", _FAIL, "choices: []"),
    Misbehaviour("usage_string", _FAIL, 'usage.prompt_tokens: "lots"'),
    Misbehaviour("content_int", _FAIL, "message.content / delta.content is an integer"),
    Misbehaviour("message_null", _FAIL, "choices[0].message: null (delta: null when streamed)"),
    Misbehaviour("sse_line_600k", _FAIL, "one SSE line of 600 KB (a single JSON chunk); 600 KB content when not streamed"),
    Misbehaviour("deep_json_300", _FAIL, "a field of the answer nested 300 deep"),
    Misbehaviour("html_200", _FAIL, "200 with an HTML page"),
    Misbehaviour("empty_200", _FAIL, "200 with an empty body"),
    Misbehaviour("truncated_json", _FAIL, "the first half of a valid completion, then close"),
    Misbehaviour("stream_no_done", _FAIL, "a stream that ends without [DONE] (not streamed: no usage and no choices)"),
    Misbehaviour("stream_error_event", _FAIL, 'a stream with data: {"error": ...} half way'),
    Misbehaviour("http_401_echoes_key", _FAIL, "401 whose message repeats the API key it was sent"),
    Misbehaviour("http_500_text", _FAIL, "500 with a plain-text body"),
)


def stage_of(body: Any) -> str:
    msgs = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(msgs, list) or not msgs:
        return "panel"
    first, last = msgs[0], msgs[-1]

    def text(m: Any) -> str:
        content = m.get("content") if isinstance(m, dict) else None
        return content if isinstance(content, str) else ""

    if "Judge analysis:" in text(first):
        return "synthesis"
    if len(msgs) == 1 and "consensus" in text(last) and "Panel answers:" in text(last):
        return "judge"
    return "panel"


@dataclass
class Upstream:
    """The misbehaving backends: ``set(stage, name)`` picks the next case's behaviour."""

    names: list[str]
    key: str
    stage: str = "judge"
    mode: str = "normal"
    calls: list[dict[str, Any]] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runners: list[web.AppRunner] = field(default_factory=list)

    def set(self, stage: str, mode: str) -> None:
        self.stage, self.mode = stage, mode
        self.calls.clear()

    # ------------------------------------------------------------------ serving

    def start(self) -> Upstream:
        ready = threading.Event()

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=main, daemon=True, name="fuzz-upstream")
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the misbehaving upstream did not start")
        return self

    async def _serve(self) -> None:
        for name in self.names:
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app[_KEY] = self.key
            app.router.add_post("/v1/chat/completions", self._handler(name))
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.ports[name] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._runners.append(runner)

    def stop(self) -> None:
        if self._loop is None:
            return

        async def down() -> None:
            for r in self._runners:
                await r.cleanup()

        asyncio.run_coroutine_threadsafe(down(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _handler(self, backend: str) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            stage = stage_of(body)
            self.calls.append(
                {
                    "backend": backend,
                    "stage": stage,
                    "authorization": request.headers.get("authorization"),
                    "body": body,
                    "time": time.time(),
                }
            )
            stream = isinstance(body, dict) and body.get("stream") is True
            model = body.get("model", "m") if isinstance(body, dict) else "m"
            mode = self.mode if stage == self.stage else "normal"
            content = f"```json\n{json.dumps(_ANALYSIS)}\n```" if stage == "judge" else f"[{model}@{backend}] A fine answer."
            try:
                return await _answer(request, mode, stream, str(model), content, request.headers.get("authorization", ""))
            except ConnectionError:  # the router gave up on this answer half way: that is its call to make
                return web.Response(status=499)

        return handle


def _completion(model: str, content: Any, **over: Any) -> dict[str, Any]:
    doc = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
    doc.update(over)
    return doc


def _chunk(model: str, delta: Any, finish: str | None = None) -> bytes:
    doc = {
        "id": "chatcmpl-s",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


async def _answer(request: web.Request, mode: str, stream: bool, model: str, content: str, auth: str) -> web.StreamResponse:
    if mode == "http_401_echoes_key":
        # Some servers repeat the key in the message; use the configured one even when none was sent.
        key = auth.removeprefix("Bearer ").strip() or request.app[_KEY]
        return web.json_response(
            {
                "error": {
                    "message": f"Incorrect API key provided: {key}. You can find your API key at https://example.invalid/keys.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
            status=401,
        )
    if mode == "http_500_text":
        return web.Response(status=500, text="Internal Server Error", content_type="text/plain")
    if mode == "html_200":
        return web.Response(status=200, text="<html><body>Gateway says hi</body></html>", content_type="text/html")
    if mode == "empty_200":
        return web.Response(status=200, body=b"", content_type="application/json")
    if mode == "chunked_5k":
        content = (content + " ") + "x" * 5000
    elif mode == "one_write_128k":
        content = (content + " ") + "y" * (128 * 1024)
    elif mode == "sse_line_600k" and not stream:
        content = (content + " ") + "z" * (600 * 1024)

    if not stream:
        doc: Any = _completion(model, content)
        if mode == "choices_strings":
            doc["choices"] = ["x"]
        elif mode == "choices_empty":
            doc["choices"] = []
        elif mode == "usage_string":
            doc["usage"]["prompt_tokens"] = "lots"
        elif mode == "content_int":
            doc["choices"][0]["message"]["content"] = 42
        elif mode == "message_null":
            doc["choices"][0]["message"] = None
        elif mode == "deep_json_300":
            doc["choices"][0]["message"]["extra"] = "__DEEP__"
        elif mode in ("stream_no_done", "stream_error_event"):
            doc = {"id": "x", "object": "chat.completion", "model": model}
        data = json.dumps(doc).encode()
        if mode == "deep_json_300":
            data = data.replace(b'"__DEEP__"', b"[" * 300 + b"1" + b"]" * 300)
        if mode == "truncated_json":
            resp = web.StreamResponse(status=200, headers={"content-type": "application/json", "content-length": str(len(data))})
            await resp.prepare(request)
            await resp.write(data[: len(data) // 2])
            if request.transport is not None:
                request.transport.close()
            return resp
        if mode == "chunked_5k":
            resp = web.StreamResponse(status=200, headers={"content-type": "application/json"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for i in range(0, len(data), 1024):
                await resp.write(data[i : i + 1024])
                await asyncio.sleep(0.005)
            await resp.write_eof()
            return resp
        return web.Response(status=200, body=data, content_type="application/json")

    resp = web.StreamResponse(status=200, headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
    await resp.prepare(request)
    await resp.write(_chunk(model, {"role": "assistant", "content": ""}))
    if mode == "sse_line_600k":
        await resp.write(_chunk(model, {"content": "z" * (600 * 1024)}))
    elif mode == "content_int":
        await resp.write(_chunk(model, {"content": 42}))
    elif mode == "message_null":
        await resp.write(_chunk(model, None))
    elif mode == "choices_strings":
        await resp.write(b'data: {"choices": ["x"]}\n\n')
    elif mode == "usage_string":
        await resp.write(
            b'data: {"choices": [], "usage": {"prompt_tokens": "lots", "completion_tokens": 1, "total_tokens": 1}}\n\n'
        )
    elif mode == "deep_json_300":
        await resp.write(
            b'data: {"choices": [{"index": 0, "delta": {"content": "a", "x": ' + b"[" * 300 + b"1" + b"]" * 300 + b"}}]}\n\n"
        )
    elif mode == "html_200" or mode == "empty_200":
        pass
    elif mode == "truncated_json":
        await resp.write(b'data: {"choices": [{"index": 0, "delta": {"content": "ab')
        if request.transport is not None:
            request.transport.close()
        return resp
    for i in range(0, len(content), 1024 if mode in ("chunked_5k", "one_write_128k") else 16):
        await resp.write(_chunk(model, {"content": content[i : i + (1024 if mode in ("chunked_5k", "one_write_128k") else 16)]}))
    if mode == "stream_error_event":
        await resp.write(b'data: {"error": {"message": "model overloaded", "type": "server_error", "code": "overloaded"}}\n\n')
        await resp.write_eof()
        return resp
    await resp.write(_chunk(model, {}, "stop"))
    await resp.write(b'data: {"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}\n\n')
    if mode != "stream_no_done":
        await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


# --------------------------------------------------------------------------- cases and the run


def cases(every_combination: bool = False) -> list[tuple[str, Misbehaviour, str, bool, Case]]:
    """(stage, misbehaviour, entry, stream, case) for every stage x misbehaviour, streamed and not; the
    entry (Fusion slug or request-level panel) alternates, or with ``every_combination`` both are run."""
    out = []
    n = 0
    for i, (stage, mb) in enumerate((s, m) for s in STAGES for m in MISBEHAVIOURS):
        entries: tuple[tuple[str, bool], ...] = (
            (("fusion", False), ("plugin", True)) if i % 2 == 0 else (("plugin", False), ("fusion", True))
        )
        if every_combination:
            entries = (("fusion", False), ("fusion", True), ("plugin", False), ("plugin", True))
        for entry, stream in entries:
            body = chat([user(T.RESEARCH)], entry, stream)
            b = Builder(f"upstream-{n:04d}", "upstream", f"{stage}/{mb.name}@{entry}{'/stream' if stream else ''}")
            expect = set(mb.expect) | ({200} if stream else set())
            case = b.json_case(body, expect, timeout_s=60.0)
            case.repro = (
                f"Fusion {entry} request (stream={str(stream).lower()}) while the backend answers the {stage} call "
                f"with: {mb.note}. Request: {json.dumps(describe(body))}"
            )
            out.append((stage, mb, entry, stream, case))
            n += 1
    return out


def upstream_config(up: Upstream) -> dict[str, Any]:
    cfg = load_default_config()
    for b in cfg["backends"]:
        b["endpoint"] = f"http://127.0.0.1:{up.ports[b['name']]}"
        b["api_key_env"] = KEY_ENV
    return cfg


def run(
    workroot: Path,
    rss_kill_mb: float = 3072.0,
    rss_growth_mb: float = 512.0,
    verbose: bool = False,
    progress: Callable[[CaseResult], None] | None = None,
    every_combination: bool = False,
) -> list[CaseResult]:
    """Every case through a stack whose backends all point at the misbehaving upstream."""
    names = [b["name"] for b in load_default_config()["backends"]]
    key = "sk-fuzz-" + secrets.token_hex(12)
    up = Upstream(names, key).start()
    results: list[CaseResult] = []
    target = Target(
        workroot,
        upstream_config(up),
        {},
        rss_kill_mb=rss_kill_mb,
        env={KEY_ENV: key},
        use_sims=False,
        clear_fn=up.calls.clear,
        received_fn=lambda: list(up.calls),
        after_case_fn=lambda: up.set("judge", "normal"),
    )
    try:
        target.start()
        for stage, mb, _entry, _stream, case in cases(every_combination):
            up.set(stage, mb.name)
            result = run_case(target, case, rss_growth_mb, secrets=(key,))
            calls = target.last_received
            keyless = [c for c in calls if c["authorization"] != f"Bearer {key}"]
            if keyless:
                result.violations.append(
                    Violation(
                        case.id,
                        case.category,
                        case.variant,
                        "api_key_sent",
                        f"{len(keyless)} of {len(calls)} backend calls had no (or a wrong) API key: "
                        + ", ".join(sorted({f"{c['backend']}/{c['stage']}" for c in keyless})),
                        result.status,
                        "",
                    )
                )
            results.append(result)
            if progress is not None:
                progress(result)
            elif verbose:
                print(f"{case.id} {case.variant} -> {result.status} {[v.invariant for v in result.violations]}", flush=True)
            if any(v.invariant in ("router_alive", "serves_after") for v in result.violations):
                target.restart()
    finally:
        target.stop()
        up.stop()
    return results
