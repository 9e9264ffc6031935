"""Routing overhead: Envoy alone vs Envoy + fusion-router on a keyword decision (`make bench-router`).

One run starts one simulated backend (latency 0, non-stream), an Envoy that routes straight to it (no
ext_proc filter) and, all at once, Envoy + the real ``fusion-router serve`` in each chosen variant
(1 worker, 2 workers (one gRPC port each, balanced by Envoy), BUFFERED body mode, no uvloop, log level warning) plus a
transport-only grpc.aio ext_proc (``floor``: what any Python ext_proc pays). Targets are measured in
interleaved turns, so other work on a shared machine disturbs them alike:

* sequential keep-alive requests (Python ``http.client``) → latency p50/p90/p99, also straight to the backend;
* closed-loop load at concurrency 8 and 32 for a fixed time (``wrk`` when installed, else aiohttp) → req/s;
* CPU seconds per process group during the load runs → CPU cost per request, and the background share;
* an in-process microbenchmark of the router's Python hot path (``Phases.run`` without gRPC).

It prints tables, the added latency (target − Envoy alone), the throughput ratio and a JSON blob.
``--profile`` also samples the 1-worker router with py-spy (native frames) under c32 load. Goals
(reported, not asserted): ≤ 1 ms p50 added, ≤ 3 ms p99 added, ≥ 0.5× Envoy-alone req/s.

``--peer litellm`` adds LiteLLM's proxy (installed into its own venv under bench/.work/, see
bench/peer_litellm.py) as one more interleaved target: it routes the same request to the same simulated
backend, every target then gets the same ``Authorization`` header LiteLLM checks, and a peer table prints
each gateway's added latency (target − backend direct) and its req/s relative to LiteLLM's.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_litellm
from common import (
    Cleanup,
    CpuMeter,
    LoadResult,
    background_share,
    fmt,
    machine,
    pct,
    pick_port,
    print_machine,
    process_tree,
    run_load,
    sequential_latency,
    start_envoy,
    start_sims,
    summary,
    table,
    wait_quiet,
    workdir,
)

from router.config import load_config
from router.envoyconf import EnvoyPorts, build_envoy_config
from router.local import Stack
from router.processes import spawn

BACKEND = "bench-backend"
PROMPT = "Write a Python function that reverses a list"
GOALS = {"p50_added_ms": 1.0, "p99_added_ms": 3.0, "throughput_ratio": 0.5}

# name → how the router runs
VARIANTS: dict[str, dict[str, Any]] = {
    "w1": {"label": "router, 1 worker", "workers": 1, "body_mode": "FULL_DUPLEX_STREAMED", "log_level": "info"},
    "w2": {"label": "router, 2 workers", "workers": 2, "body_mode": "FULL_DUPLEX_STREAMED", "log_level": "info"},
    "w1-buffered": {"label": "router, 1 worker, BUFFERED", "workers": 1, "body_mode": "BUFFERED", "log_level": "info"},
    "w1-quiet": {
        "label": "router, 1 worker, log warning",
        "workers": 1,
        "body_mode": "FULL_DUPLEX_STREAMED",
        "log_level": "warning",
    },
    # `serve` installs uvloop when importable; a shim on PYTHONPATH makes that import fail -> stock asyncio.
    "w1-asyncio": {
        "label": "router, 1 worker, no uvloop",
        "workers": 1,
        "body_mode": "FULL_DUPLEX_STREAMED",
        "log_level": "info",
        "no_uvloop": True,
    },
    # Not the router: a transport-only grpc.aio ext_proc (this file, --serve-null-extproc) = the Python floor.
    "floor": {"label": "minimal grpc.aio ext_proc", "floor": True, "body_mode": "FULL_DUPLEX_STREAMED"},
}


def router_config(backend_port: int) -> dict[str, Any]:
    """Two models on one backend; a keyword decision picks the coder model (so the body is rewritten)."""
    return {
        "version": 1,
        "backends": [{"name": BACKEND, "endpoint": f"http://127.0.0.1:{backend_port}"}],
        "models": [
            {"name": "general", "backend": BACKEND, "served_model_id": "sim-general"},
            {"name": "coder", "backend": BACKEND, "served_model_id": "sim-coder"},
        ],
        "default_model": "general",
        "routing": {
            "signals": {
                "keywords": [
                    {
                        "name": "code_keywords",
                        "operator": "any",
                        "method": "word",
                        "keywords": [
                            "python",
                            "javascript",
                            "rust",
                            "function",
                            "class",
                            "bug",
                            "compile",
                            "refactor",
                            "sql",
                            "regex",
                        ],
                    }
                ]
            },
            "decisions": [
                {
                    "name": "coding",
                    "priority": 100,
                    "modelRefs": [{"model": "coder"}],
                    "rules": {"operator": "OR", "conditions": [{"type": "keyword", "name": "code_keywords"}]},
                },
                {"name": "general", "priority": 0, "modelRefs": [{"model": "general"}]},
            ],
        },
    }


def request_body() -> bytes:
    return json.dumps({"model": "vllm-sr/auto", "max_tokens": 16, "messages": [{"role": "user", "content": PROMPT}]}).encode()


def _check_routed(resp, data: bytes) -> None:
    decision = resp.getheader("x-vsr-selected-decision")
    model = resp.getheader("x-sim-received-model")
    if decision != "coding" or model != "sim-coder":
        raise RuntimeError(f"router did not route on the keyword decision: decision={decision!r} model={model!r}")


def _check_floor(resp, data: bytes) -> None:
    if resp.getheader("x-sim-backend") != BACKEND or resp.getheader("x-sim-received-model") != "vllm-sr/auto":
        raise RuntimeError("the minimal ext_proc did not pass the request through to the backend")


def _check_backend(resp, data: bytes) -> None:
    if resp.getheader("x-sim-backend") != BACKEND:
        raise RuntimeError("the answer did not come from the simulated backend")


def _router_pids(stack: Stack) -> list[int]:
    return process_tree(stack.procs["router"].pid)


def profile_router(stack: Stack, url: str, args: argparse.Namespace, wd: Path) -> dict[str, Any]:
    """py-spy (with native frames) samples the router while c32 load runs; returns where the CPU goes."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {"error": "py-spy not installed (`.venv/bin/pip install py-spy`)"}
    raw, svg = wd / "router-profile.txt", wd / "router-profile.svg"
    pid = stack.procs["router"].pid
    dur = max(4, int(args.duration))
    recs = [
        subprocess.Popen(
            [spy, "record", "-p", str(pid), "-d", str(dur), "-r", "250", "--native", "--idle", "-f", kind, "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for kind, out in (("raw", raw), ("flamegraph", svg))
    ]
    errs: list[str] = []
    try:
        time.sleep(0.5)
        run_load(url, request_body(), {}, 32, dur + 1, None, wd)
        for r in recs:
            try:
                _, err = r.communicate(timeout=dur + 60)
            except subprocess.TimeoutExpired:
                r.kill()
                _, err = r.communicate()
            errs.append(err.decode(errors="replace") if err else "")
    finally:
        for r in recs:  # interrupted: do not leave samplers attached
            if r.poll() is None:
                r.kill()
                r.wait()
    if not raw.exists():
        return {"error": f"py-spy produced nothing (it needs ptrace rights): {errs[0][-400:]}"}
    return summarize_profile(raw.read_text(), svg if svg.exists() else None)


# The leaf-most frame that matches decides the bucket; libc syscall frames are skipped to find their owner.
_BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("router: logging (structlog)", ("structlog", "/logging/")),
    ("router: metrics (prometheus_client)", ("prometheus_client", "router/observability")),
    ("router: protobuf messages (wire.py, upb)", ("router/extproc/wire.py", "PyUpb", "upb_", "_message.abi3", "encode_message")),
    ("router: parse + pydantic models", ("pydantic", "router/openai")),
    ("router: orjson", ("orjson",)),
    ("router: signals + decision", ("router/signals", "router/decisions")),
    ("router: pipeline (route_to, headers)", ("router/extproc/pipeline.py", "router/actions.py", "router/state.py")),
    ("router: phase machine + servicer", ("router/extproc/stream.py", "router/extproc/server.py")),
    ("grpc aio (cygrpc + C core)", ("cygrpc", "grpc/", "libgrpc")),
    ("Python GC", ("gc_collect",)),
    ("uvloop / asyncio scheduling", ("loop.c", "uv_", "uv__", "_asynciomodule", "asyncio/", "uvloop")),
]
_SYSCALLS = ("write", "sendmsg", "recvmsg", "recv", "read", "eventfd_write", "syscall", "epoll_ctl", "futex", "__lll")
_IDLE = ("epoll_wait", "epoll_pwait", "__select", "poll (", "pthread_cond_timedwait", "sem_wait", "nanosleep")


def summarize_profile(text: str, svg: Path | None, top: int = 25) -> dict[str, Any]:
    total = active = 0
    buckets: collections.Counter[str] = collections.Counter()
    syscalls: collections.Counter[str] = collections.Counter()
    py_incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        leaf = frames[-1]
        if leaf.startswith(_IDLE):
            continue
        active += n
        threads["grpc poller thread" if any(f.startswith("Thread.run (") for f in frames) else "event-loop thread"] += n
        name = leaf.split(" (", 1)[0]
        if name.startswith(_SYSCALLS) and "(libc" in leaf:
            syscalls[name] += n
        label = "other"
        for f in reversed(frames):
            if f.split(" (", 1)[0].startswith(_SYSCALLS) and "(libc" in f:
                continue
            hit = next((lbl for lbl, keys in _BUCKETS if any(k in f for k in keys)), None)
            if hit:
                label = hit
                break
        buckets[label] += n
        seen: set[str] = set()
        for f in frames:
            if ".py:" in f and "router/" in f:
                key = f.rsplit(":", 1)[0] + ")"
                if key not in seen:
                    py_incl[key] += n
                    seen.add(key)
    share = lambda c: {k: round(100 * v / max(1, active), 1) for k, v in c.most_common(top)}  # noqa: E731
    return {
        "samples": total,
        "active_pct": round(100 * active / max(1, total), 1),
        "buckets_pct": share(buckets),
        "threads_pct": share(threads),
        "syscalls_pct": share(syscalls),
        "python_inclusive_pct": list(share(py_incl).items()),
        "flamegraph": str(svg) if svg else None,
    }


def microbench(cfg_path: Path, n: int, level: str) -> int:
    """In-process cost of the router's Python hot path for the bench request, without gRPC: Envoy's two
    messages are parsed from bytes, driven through the real ``Phases.run`` and the answers serialised,
    as grpc.aio would. Prints one JSON line of microseconds per request (best of 3 runs each)."""
    import asyncio

    import orjson
    import structlog

    from router._pb.envoy.config.core.v3 import base_pb2 as core
    from router._pb.envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm
    from router._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
    from router.app import App
    from router.extproc import wire
    from router.extproc.stream import Phases
    from router.observability.logging import configure_logging
    from router.openai.parse import parse_chat_body
    from router.signals.runtime import build_runtime

    body = request_body()
    hdrs = {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        ":authority": "127.0.0.1:8801",
        ":scheme": "http",
        "content-type": "application/json",
        "content-length": str(len(body)),
        "user-agent": "bench",
        "x-forwarded-proto": "http",
        "x-request-id": "5f0c1f9e-3b1a-4c55-9d0e-1b2c3d4e5f60",
    }
    head = ep.ProcessingRequest(
        request_headers=ep.HttpHeaders(
            headers=core.HeaderMap(headers=[core.HeaderValue(key=k, raw_value=v.encode()) for k, v in hdrs.items()])
        ),
        protocol_config=ep.ProtocolConfiguration(request_body_mode=pm.ProcessingMode.FULL_DUPLEX_STREAMED),
    ).SerializeToString()
    tail = ep.ProcessingRequest(request_body=ep.HttpBody(body=body, end_of_stream=True)).SerializeToString()
    config = load_config(cfg_path)

    async def run() -> dict[str, float]:
        app = App.from_config(config, cfg_path, build_runtime(config))
        await app.start()

        async def one() -> int:
            async def msgs():
                yield ep.ProcessingRequest.FromString(head)
                yield ep.ProcessingRequest.FromString(tail)

            size = 0
            async for out in Phases(app).run(msgs()):
                size += len(out.SerializeToString())
            return size

        def best(fn, reps: int = 3) -> float:
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                times.append((time.perf_counter() - t0) / n * 1e6)
            return min(times)

        async def abest(reps: int = 3) -> float:
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                for _ in range(n):
                    await one()
                times.append((time.perf_counter() - t0) / n * 1e6)
            return min(times)

        # structlog caches each logger's level on first use: one level per process.
        configure_logging("json", level)
        assert await one() > len(body)
        out: dict[str, float] = {f"phases_total_log_{level}_us": await abest()}
        if level != "info":
            await app.close()
            return {k: round(v, 2) for k, v in out.items()}
        log = structlog.get_logger("bench.microbench")
        out["one_info_log_line_us"] = best(
            lambda: log.info(
                "request_routed",
                request_id="5f0c1f9e",
                entry="auto",
                decision="coding",
                model="coder",
                cluster=BACKEND,
                signals=["keyword:code_keywords"],
                signal_ms=0.012,
                latency_ms=0.2,
            )
        )
        out["parse_2_messages_us"] = best(lambda: (ep.ProcessingRequest.FromString(head), ep.ProcessingRequest.FromString(tail)))
        out["orjson_loads_us"] = best(lambda: orjson.loads(body))
        out["parse_chat_body_us"] = best(lambda: parse_chat_body(body))
        routed = orjson.dumps({**orjson.loads(body), "model": "sim-coder"})
        set_h = {
            "x-vsr-cluster": BACKEND,
            "x-vsr-selected-decision": "coding",
            "x-vsr-response-path": "routed",
            "x-vsr-selected-model": "coder",
            "x-vsr-entry-path": "auto",
        }
        out["build_and_serialize_answers_us"] = best(
            lambda: [
                m.SerializeToString()
                for m in (wire.headers_response(set_h, ["content-length"]), *wire.streamed_body_responses(routed))
            ]
        )
        await app.close()
        return {k: round(v, 2) for k, v in out.items()}

    try:
        import uvloop

        res = uvloop.run(run())
    except ImportError:
        res = asyncio.run(run())
    print("MICRO " + json.dumps(res), flush=True)
    return 0


def run_microbench(cfg_path: Path, wd: Path, n: int = 2000) -> dict[str, Any]:
    log = wd / "microbench.log"  # the router's JSON log lines go here, like a real deployment's log file
    out: dict[str, Any] = {"requests_per_run": n}
    for level in ("info", "warning"):
        with open(log, "ab") as err:
            proc = subprocess.run(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--microbench",
                    str(cfg_path),
                    "--micro-n",
                    str(n),
                    "--micro-level",
                    level,
                ],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                timeout=300,
            )
        line = next((x for x in proc.stdout.splitlines() if x.startswith("MICRO ")), None)
        if proc.returncode != 0 or line is None:
            return {"error": f"microbench failed ({proc.returncode}); see {log}"}
        out.update(json.loads(line[6:]))
    return out


def serve_null_extproc(port: int) -> int:
    """A transport-only ext_proc on grpc.aio + uvloop: holds the headers answer until the body ends, then
    routes to BACKEND with a fixed header and streams the body back unchanged. No parsing, no logging,
    no metrics: what any Python grpc.aio ext_proc pays before doing its own work."""
    import asyncio

    import grpc

    from router._pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
    from router.extproc import wire

    class Null(ep_grpc.ExternalProcessorServicer):
        async def Process(self, requests, context):
            body = b""
            async for msg in requests:
                kind = msg.WhichOneof("request")
                if kind == "request_body":
                    body += msg.request_body.body
                    if msg.request_body.end_of_stream:
                        yield wire.headers_response({"x-vsr-cluster": BACKEND}, ["content-length"])
                        for out in wire.streamed_body_responses(body):
                            yield out
                elif kind == "request_trailers":
                    yield wire.trailers_response()

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 100000)])
        ep_grpc.add_ExternalProcessorServicer_to_server(Null(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    import signal as _signal

    _signal.signal(_signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(main())
    return 0


def start_floor(cleanup: Cleanup, config: Any, wd: Path) -> tuple[str, subprocess.Popen, subprocess.Popen]:
    grpc_port, listen, admin = pick_port(), pick_port(), pick_port()
    srv = cleanup.proc(
        spawn(
            [sys.executable, str(Path(__file__).resolve()), "--serve-null-extproc", str(grpc_port)],
            log_path=wd / "floor-extproc.log",
        )
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", grpc_port), timeout=1).close()
            break
        except OSError:
            if srv.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the minimal ext_proc server did not start") from None
            time.sleep(0.1)
    envoy = start_envoy(
        cleanup,
        build_envoy_config(
            config, EnvoyPorts(listen_host="127.0.0.1", listen_port=listen, admin_port=admin, router_port=grpc_port)
        ),
        admin,
        wd,
        "envoy-floor",
    )
    return f"http://127.0.0.1:{listen}/v1/chat/completions", srv, envoy


@dataclass
class Target:
    name: str
    url: str
    check: Callable[..., None]
    groups: dict[str, Callable[[], list[int]]]
    variant: str | None = None
    stack: Stack | None = None
    extra_procs: list[subprocess.Popen] = field(default_factory=list)
    peer: str | None = None  # a gateway that is not ours (--peer): compared, never judged against our goals
    headers: dict[str, str] = field(default_factory=dict)
    seq: list[float] = field(default_factory=list)
    seq_block_p50: list[float] = field(default_factory=list)
    runs: dict[int, list[LoadResult]] = field(default_factory=dict)
    connections: dict[str, int] = field(default_factory=dict)

    def procs(self) -> list[subprocess.Popen]:
        return [*(self.stack.procs.values() if self.stack else []), *self.extra_procs]


def run_sequential(targets: list[Target], args: argparse.Namespace) -> None:
    """Interleaved blocks (target A, B, C, A, B, C, ...) so drifting background load hits all alike."""
    body = request_body()
    blocks = max(1, args.rounds * 2)
    per = [args.requests // blocks + (1 if i < args.requests % blocks else 0) for i in range(blocks)]
    for i, n in enumerate(per):
        for t in targets:
            got = sequential_latency(t.url, body, t.headers, n, args.warmup if i == 0 else 20, t.check)
            t.seq += got
            t.seq_block_p50.append(pct(got, 50))


def run_throughput(targets: list[Target], args: argparse.Namespace, everything: Callable[[], list[int]], wd: Path) -> None:
    """Rounds of (every target) per concurrency. A run during which other work took more than
    ``--noisy`` of the machine is repeated once after waiting for quiet, while the retry budget lasts."""
    body = request_body()
    budget = args.retry_budget
    for c in args.concurrency:
        for _ in range(args.rounds):
            for t in targets:
                res = run_load(t.url, body, t.headers, c, args.duration / args.rounds, CpuMeter(t.groups, others=everything), wd)
                if background_share(res.cpu_s) > args.noisy and budget > 0:
                    t0 = time.monotonic()
                    wait_quiet(min(10.0, budget))
                    again = run_load(
                        t.url, body, t.headers, c, args.duration / args.rounds, CpuMeter(t.groups, others=everything), wd
                    )
                    budget -= time.monotonic() - t0
                    print(
                        f"    {t.name} c{c}: background {100 * background_share(res.cpu_s):.0f}% -> re-ran "
                        f"({100 * background_share(again.cpu_s):.0f}%)",
                        flush=True,
                    )
                    if background_share(again.cpu_s) < background_share(res.cpu_s):
                        res = again
                t.runs.setdefault(c, []).append(res)


def combine(runs: list[LoadResult]) -> dict[str, Any]:
    """Rounds of one (target, concurrency): req/s over the summed time; latency percentiles averaged."""
    secs = sum(r.duration_s for r in runs)
    reqs = sum(r.requests for r in runs)
    cpu: dict[str, float] = {}
    for r in runs:
        for k, v in r.cpu_s.items():
            cpu[k] = cpu.get(k, 0.0) + v
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {
        "tool": runs[0].tool,
        "concurrency": runs[0].concurrency,
        "duration_s": round(secs, 3),
        "requests": reqs,
        "errors": sum(r.errors for r in runs),
        "rps": round(reqs / secs, 1),
        "rps_rounds": [round(r.rps, 1) for r in runs],
        "p50_ms": round(mean([r.p50_ms for r in runs]), 3),
        "p90_ms": round(mean([r.p90_ms for r in runs]), 3),
        "p99_ms": round(mean([r.p99_ms for r in runs]), 3),
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "cpu_ms_per_request": {
            k: round(1000 * v / max(1, reqs), 4)
            for k, v in cpu.items()
            if k not in ("wall", "background", "load_generator+bench")
        },
        "background_cpu_share": round(background_share(cpu), 3),
    }


def report(targets: list[Target], args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for t in targets:
        r: dict[str, Any] = {
            "target": t.name,
            "variant": t.variant,
            "sequential_ms": {k: round(v, 4) for k, v in summary(t.seq).items()},
            "sequential_block_p50_ms": [round(x, 3) for x in t.seq_block_p50],
            "load": {str(c): combine(runs) for c, runs in t.runs.items()},
        }
        if t.stack is not None:
            r["router_connections"] = t.connections
        if t.peer:
            r["peer"] = t.peer
        results.append(r)
    base = next(r for r in results if r["target"] == "envoy-alone")
    cs = [str(c) for c in args.concurrency] if not args.no_load else []
    rows = []
    for r in results:
        s = r["sequential_ms"]
        row = [r["target"], fmt(s["p50"]), fmt(s["p90"]), fmt(s["p99"])]
        if r["variant"]:
            b = base["sequential_ms"]
            r["added_ms"] = {
                "p50": round(s["p50"] - b["p50"], 3),
                "p90": round(s["p90"] - b["p90"], 3),
                "p99": round(s["p99"] - b["p99"], 3),
            }
            row += [fmt(r["added_ms"]["p50"]), fmt(r["added_ms"]["p99"])]
        else:
            row += ["-", "-"]
        for c in cs:
            ld = r["load"][c]
            row.append(f"{ld['rps']:.0f}" + (f" ({ld['errors']} err)" if ld["errors"] else ""))
            if r is not base:
                ratio = ld["rps"] / base["load"][c]["rps"]
                r.setdefault("throughput_ratio", {})[c] = round(ratio, 3)
                row.append(f"{ratio:.2f}")
            else:
                row.append("-")
            row.append(fmt(ld["p99_ms"], 1))
        rows.append(row)
    headers = ["target", "seq p50 ms", "seq p90 ms", "seq p99 ms", "added p50", "added p99"]
    for c in cs:
        headers += [f"c{c} req/s", f"c{c} / envoy", f"c{c} p99 ms"]
    print()
    print(
        f"Sequential: {args.requests} keep-alive requests per target (interleaved blocks, {args.warmup} warm-up); "
        f"load: {args.duration:g}s per target and concurrency in {args.rounds} interleaved rounds "
        f"({results[0]['load'][cs[0]]['tool'] if cs else '-'})"
    )
    print(table(headers, rows))

    if cs:
        print("\nCPU ms per request during load (all threads of each process group), and background CPU")
        print("(other work on the machine, share of all cores) while each target ran:")
        groups = ["envoy", "router", "sim", *(["peer"] if any(r.get("peer") for r in results) else [])]
        crow = []
        for r in results:
            for c in cs:
                ld = r["load"][c]
                per = ld["cpu_ms_per_request"]
                total = sum(per.get(g, 0.0) for g in groups)
                crow.append(
                    [
                        r["target"],
                        c,
                        *[fmt(per.get(g), 3) for g in groups],
                        fmt(total, 3),
                        f"{100 * ld['background_cpu_share']:.0f}%",
                        " / ".join(f"{x:.0f}" for x in ld["rps_rounds"]),
                    ]
                )
        print(table(["target", "conc", *groups, "sum", "background", "req/s per round"], crow))

    comparison = peer_comparison(results, cs)
    verdict = {}
    for r in results:
        if "added_ms" in r:
            ratio = min(r.get("throughput_ratio", {}).values(), default=None)
            verdict[r["target"]] = {
                "p50_added_ok": r["added_ms"]["p50"] <= GOALS["p50_added_ms"],
                "p99_added_ok": r["added_ms"]["p99"] <= GOALS["p99_added_ms"],
                "throughput_ok": None if ratio is None else ratio >= GOALS["throughput_ratio"],
            }
    print("\nGoals (reported, not asserted): p50 added <= 1 ms, p99 added <= 3 ms, router req/s >= 0.5x Envoy alone")
    for name, v in verdict.items():
        print(f"  {name}: " + ", ".join(f"{k}={'yes' if ok else ('-' if ok is None else 'NO')}" for k, ok in v.items()))
    for r in results:
        if r.get("router_connections") and len(r["router_connections"]) > 1:
            print(f"  {r['target']}: Envoy's ext_proc connections per router process: {r['router_connections']}")
    if comparison:
        verdict["peer_comparison"] = comparison
    return results, verdict


def peer_comparison(results: list[dict[str, Any]], cs: list[str]) -> dict[str, Any] | None:
    """Every gateway against the peer(s) of this run: latency added over the backend direct (what a client
    pays for putting the gateway in front of its model server), req/s relative to the peer's."""
    peers = [r for r in results if r.get("peer")]
    direct = next((r for r in results if r["target"] == "backend direct"), None)
    if not peers or direct is None:
        return None
    d = direct["sequential_ms"]
    added = {
        r["target"]: {q: round(r["sequential_ms"][q] - d[q], 3) for q in ("p50", "p90", "p99")}
        for r in results
        if r is not direct
    }
    out: dict[str, Any] = {}
    for peer in peers:
        pa = added[peer["target"]]
        rows, per = [], {}
        for r in results:
            if r is direct:
                continue
            a = added[r["target"]]
            rps = {c: r["load"][c]["rps"] for c in cs}
            per[r["target"]] = {
                "added_ms": a,
                "rps": rps,
                "rps_vs_peer": {c: round(rps[c] / peer["load"][c]["rps"], 2) if peer["load"][c]["rps"] else None for c in cs},
                "peer_added_p50_over_this": round(pa["p50"] / a["p50"], 1) if a["p50"] > 0 else None,
            }
            x = per[r["target"]]
            errs = {c: r["load"][c]["errors"] for c in cs}
            rows.append(
                [
                    r["target"],
                    fmt(a["p50"]),
                    fmt(a["p99"]),
                    *(f"{rps[c]:.0f}" + (f" ({errs[c]} err)" if errs[c] else "") for c in cs),
                    " / ".join(fmt(x["rps_vs_peer"][c]) for c in cs),
                    "-" if r is peer else fmt(x["peer_added_p50_over_this"], 1),
                ]
            )
        out[peer["target"]] = per
        print(
            f"\nPeers side by side: the same request, simulated backend, client and concurrency, interleaved "
            f"in this run. Added = target − backend direct (sequential, p50 {fmt(d['p50'])} ms direct)."
        )
        print(
            table(
                [
                    "target",
                    "added p50 ms",
                    "added p99 ms",
                    *(f"c{c} req/s" for c in cs),
                    f"req/s ÷ {peer['target']} ({' / '.join('c' + c for c in cs)})",
                    "peer's added p50 ÷ this",
                ],
                rows,
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="sequential requests per target (default 2000)")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--duration", type=float, default=6.0, help="seconds of load per target and concurrency (default 6)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds the load time is split into (default 2)")
    ap.add_argument(
        "--concurrency",
        type=lambda s: [int(x) for x in s.split(",")],
        default=None,
        help="load concurrencies (default 8,32; 1,8,32 with --peer)",
    )
    ap.add_argument("--variants", default="floor,w1,w2,w1-buffered", help=f"router variants, from {','.join(VARIANTS)}")
    ap.add_argument("--no-load", action="store_true", help="sequential latency only")
    ap.add_argument("--no-micro", action="store_true", help="skip the in-process hot-path microbenchmark")
    ap.add_argument("--profile", action="store_true", help="py-spy (native) the 1-worker router under c32 load")
    ap.add_argument(
        "--settle",
        type=float,
        default=15.0,
        help="wait up to this many seconds for other work on the machine to calm down first (default 15)",
    )
    ap.add_argument(
        "--noisy",
        type=float,
        default=0.25,
        help="re-run a load run once when other work used more than this share of the machine (default 0.25)",
    )
    ap.add_argument("--retry-budget", type=float, default=20.0, help="seconds that re-runs may add in total (default 20)")
    ap.add_argument("--serve-null-extproc", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--microbench", type=Path, metavar="CONFIG", help=argparse.SUPPRESS)
    ap.add_argument("--micro-n", type=int, default=2000, help=argparse.SUPPRESS)
    ap.add_argument("--micro-level", default="info", help=argparse.SUPPRESS)
    ap.add_argument(
        "--peer",
        choices=["litellm"],
        help="also measure a peer gateway on the same backend and request (installed into bench/.work/)",
    )
    ap.add_argument(
        "--peer-version",
        default=peer_litellm.DEFAULT_VERSION,
        help=f"LiteLLM version for --peer litellm (default {peer_litellm.DEFAULT_VERSION})",
    )
    ap.add_argument("--json", type=Path, help="also write the JSON result here")
    ap.add_argument("--quick", action="store_true", help="smoke run: 300 requests, 2 s load, one round")
    args = ap.parse_args(argv)
    if args.serve_null_extproc:
        return serve_null_extproc(args.serve_null_extproc)
    if args.microbench:
        return microbench(args.microbench, args.micro_n, args.micro_level)
    if args.quick:
        args.requests, args.warmup, args.duration, args.rounds, args.settle, args.retry_budget = 300, 50, 2.0, 1, 0.0, 0.0
    if args.concurrency is None:
        # With a peer, one connection too: the added latency of each gateway with no contention at all.
        args.concurrency = [1, 8, 32] if args.peer else [8, 32]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")

    info = machine()
    print_machine(info)
    peer_python = peer_litellm.ensure_installed(args.peer_version) if args.peer == "litellm" else None
    wd = workdir("router-bench-")
    profile: dict[str, Any] | None = None
    started = time.monotonic()
    with Cleanup() as cleanup:
        backend_port = pick_port()
        sim = start_sims(
            cleanup,
            [
                {
                    "name": BACKEND,
                    "port": backend_port,
                    "models": ["sim-general", "sim-coder"],
                    "latency_ms": 0,
                    "tps": 0,
                    "max_tokens": 16,
                    "request_log_size": 0,
                }
            ],
            wd,
        )
        cfg_path = wd / "router-bench.yaml"
        cfg_path.write_text(yaml.safe_dump(router_config(backend_port), sort_keys=False))
        config = load_config(cfg_path)

        # (a) Envoy alone: the same generated config minus the ext_proc filter, one fixed cluster.
        plain_port, plain_admin = pick_port(), pick_port()
        plain = start_envoy(
            cleanup,
            build_envoy_config(
                config,
                EnvoyPorts(listen_host="127.0.0.1", listen_port=plain_port, admin_port=plain_admin),
                ext_proc=False,
                default_cluster=BACKEND,
            ),
            plain_admin,
            wd,
            "envoy-alone",
        )
        sim_pids = lambda: [sim.pid]  # noqa: E731
        targets = [
            Target("backend direct", f"http://127.0.0.1:{backend_port}/v1/chat/completions", _check_backend, {"sim": sim_pids}),
            Target(
                "envoy-alone",
                f"http://127.0.0.1:{plain_port}/v1/chat/completions",
                _check_backend,
                {"envoy": lambda: [plain.pid], "sim": sim_pids},
            ),
        ]
        # (b) Envoy + router, every variant up at once (idle ones cost nothing measurable), measured in turns.
        for key in variants:
            v = VARIANTS[key]
            if v.get("floor"):
                url, srv, fenvoy = start_floor(cleanup, config, wd)
                targets.append(
                    Target(
                        v["label"],
                        url,
                        _check_floor,
                        {"envoy": lambda e=fenvoy: [e.pid], "router": lambda s_=srv: [s_.pid], "sim": sim_pids},
                        variant=key,
                        extra_procs=[srv, fenvoy],
                    )
                )
                continue
            (wd / key).mkdir()
            env = {}
            if v.get("no_uvloop"):
                shim = wd / "no-uvloop"
                shim.mkdir(exist_ok=True)
                (shim / "uvloop.py").write_text('raise ImportError("uvloop disabled by bench/router_bench.py")\n')
                env["PYTHONPATH"] = os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
            stack = cleanup.stack(
                Stack(
                    cfg_path,
                    listen_port=pick_port(),
                    grpc_port=pick_port(),
                    admin_port=pick_port(),
                    envoy_admin_port=pick_port(),
                    workdir=wd / key,
                    quiet=True,
                    log_format="json",
                    log_level=v["log_level"],
                    body_mode=v["body_mode"],
                    env=env,
                    workers=v["workers"],
                    internal_port=pick_port(),
                )
            )
            stack.start()
            if v["workers"] > 1:
                _wait_workers(stack, v["workers"])
            targets.append(
                Target(
                    v["label"],
                    f"{stack.url}/v1/chat/completions",
                    _check_routed,
                    {"envoy": lambda s=stack: [s.procs["envoy"].pid], "router": lambda s=stack: _router_pids(s), "sim": sim_pids},
                    variant=key,
                    stack=stack,
                )
            )
        if peer_python is not None:
            targets.append(start_litellm(cleanup, peer_python, args.peer_version, backend_port, wd, sim_pids))
            for t in targets:  # the same request everywhere: LiteLLM checks this header, the others ignore it
                t.headers = dict(targets[-1].headers)

        def everything() -> list[int]:
            return [p for pr in [sim, plain, *(x for t in targets for x in t.procs())] for p in process_tree(pr.pid)]

        print(
            f"workdir {wd}; backend :{backend_port}; Envoy alone :{plain_port}; "
            + "; ".join(f"{t.variant} {t.url.split('/v1')[0]}" for t in targets if t.variant),
            flush=True,
        )
        if args.settle:
            share = wait_quiet(args.settle)
            print(f"background CPU before measuring: {100 * share:.0f}% of all cores", flush=True)

        t0 = time.monotonic()
        run_sequential(targets, args)
        print(f"  sequential latency done ({time.monotonic() - t0:.0f}s)", flush=True)
        if not args.no_load:
            t0 = time.monotonic()
            run_throughput(targets, args, everything, wd)
            print(f"  throughput done ({time.monotonic() - t0:.0f}s)", flush=True)
        for t in targets:  # after the load, so every Envoy worker thread has opened its ext_proc connection
            if t.stack is not None:
                t.connections = _grpc_conn_spread(t.stack)
        if args.profile:
            w1 = next((t for t in targets if t.variant == "w1"), None)
            if w1 is None:
                profile = {"error": "--profile needs the w1 variant"}
            else:
                print("  profiling the 1-worker router with py-spy under c32 load ...", flush=True)
                profile = profile_router(w1.stack, w1.url, args, wd)

    micro = None if args.no_micro else run_microbench(cfg_path, wd)
    results, verdict = report(targets, args)
    if micro:
        print_micro(micro)
    if profile:
        print_profile(profile)
    print(f"\nbench-router took {time.monotonic() - started:.0f}s")
    blob = {
        "bench": "router",
        "machine": info,
        "goals": GOALS,
        "settings": {
            "requests": args.requests,
            "warmup": args.warmup,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "variants": variants,
            "peer": f"litellm {args.peer_version}" if args.peer else None,
        },
        "results": results,
        "verdict": verdict,
        "microbench_us": micro,
        "profile": profile,
    }
    print("\nJSON:")
    print(json.dumps(blob, indent=None))
    if args.json:
        args.json.write_text(json.dumps(blob, indent=2))
    return 0


def start_litellm(
    cleanup: Cleanup, python: Path, version: str, backend_port: int, wd: Path, sim_pids: Callable[[], list[int]]
) -> Target:
    """LiteLLM's proxy sending the bench's model name to the coder model on the same simulated backend."""
    key = peer_litellm.new_master_key()
    config = peer_litellm.write_config(wd / "litellm.yaml", json.loads(request_body())["model"], "sim-coder", backend_port)
    port = pick_port()
    proc = peer_litellm.start(cleanup, python, config, port, wd, key)
    return Target(
        f"LiteLLM {version} proxy",
        f"http://127.0.0.1:{port}/v1/chat/completions",
        _check_peer,
        {"peer": lambda: process_tree(proc.pid), "sim": sim_pids},
        extra_procs=[proc],
        peer=f"litellm {version}",
        headers={"authorization": f"Bearer {key}"},
    )


def _check_peer(resp, data: bytes) -> None:
    # LiteLLM passes the upstream's headers on with an `llm_provider-` prefix.
    backend, model = resp.getheader("llm_provider-x-sim-backend"), resp.getheader("llm_provider-x-sim-received-model")
    if backend != BACKEND or model != "sim-coder":
        raise RuntimeError(f"LiteLLM did not send the request to the coder model: backend={backend!r} model={model!r}")


def _wait_workers(stack: Stack, workers: int, timeout: float = 30.0) -> None:
    """Extra workers start after the first one answers /readyz: wait until all of them run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(_router_pids(stack)) >= workers:
            time.sleep(2.0)  # let them import and bind
            return
        time.sleep(0.2)
    raise RuntimeError(f"only {len(_router_pids(stack))} of {workers} router processes started")


def _grpc_conn_spread(stack: Stack) -> dict[str, int]:
    """How Envoy's ext_proc connections landed on the router processes (worker i listens on grpc_port + i)."""
    ports = " or ".join(f"sport = :{stack.grpc_port + i}" for i in range(max(1, stack.workers)))
    try:
        out = subprocess.run(
            ["ss", "-Htnp", "state", "established", f"( {ports} )"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {str(pid): out.count(f"pid={pid},") for pid in _router_pids(stack)}


def print_micro(m: dict[str, Any]) -> None:
    print("\nRouter hot path in-process (no gRPC, no Envoy; best of 3 x 2,000 requests), microseconds per request:")
    if "error" in m:
        print("  " + m["error"])
        return
    labels = [
        ("phases_total_log_info_us", "whole request: Phases.run, 2 messages parsed + answers serialised (log level info)"),
        ("phases_total_log_warning_us", "the same, log level warning"),
        ("one_info_log_line_us", "  one structlog JSON line (request_routed)"),
        ("parse_2_messages_us", "  parse Envoy's 2 ProcessingRequest messages"),
        ("parse_chat_body_us", "  parse_chat_body (orjson + pydantic)"),
        ("orjson_loads_us", "    of which orjson.loads"),
        ("build_and_serialize_answers_us", "  build + serialise the headers and body answers (wire.py)"),
    ]
    print(table(["step", "us"], [[label, fmt(m.get(key))] for key, label in labels]))


def print_profile(p: dict[str, Any]) -> None:
    print("\npy-spy --native, 1-worker router under c32 load (active samples only; idle epoll waits left out):")
    if "error" in p:
        print("  " + p["error"])
        return
    print(f"  {p['samples']} samples, {p['active_pct']}% active; flamegraph: {p['flamegraph']}")
    print(table(["where the router's CPU goes", "% of active"], [[k, f"{v:.1f}"] for k, v in p["buckets_pct"].items()]))
    print("  syscalls at the leaf (any bucket): " + ", ".join(f"{k} {v}%" for k, v in p["syscalls_pct"].items()))
    print("  hottest Python functions (inclusive, % of active):")
    for name, share in p["python_inclusive_pct"][:15]:
        print(f"    {share:5.1f}%  {name}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nbench-router: interrupted; everything it started was stopped", file=sys.stderr)
        sys.exit(130)
