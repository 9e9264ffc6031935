"""Routing overhead: Envoy alone vs Envoy + fusion-router on a keyword decision (`make bench-router`).

One run starts one simulated backend (latency 0, non-stream), an Envoy that routes straight to it (no
ext_proc) and, one after another, Envoy + the real ``fusion-router serve`` in each variant (1 worker,
2 workers via SO_REUSEPORT, BUFFERED body mode, ...). Every target gets the same request:

* sequential keep-alive requests (Python ``http.client``) → latency p50/p90/p99, also straight to the backend;
* closed-loop load at concurrency 8 and 32 for a fixed time (``wrk`` when installed, else aiohttp) → req/s;
* CPU seconds per process group during the load runs → CPU cost per request.

It prints a table, the added latency (router − Envoy alone), the throughput ratio and a JSON blob.
``--profile`` also samples the 1-worker router with py-spy during its c32 load and prints the hottest
functions. Goals (reported, not asserted): ≤ 1 ms p50 added, ≤ 3 ms p99 added, ≥ 0.5× Envoy-alone req/s.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ROOT,
    Cleanup,
    CpuMeter,
    fmt,
    machine,
    pick_port,
    print_machine,
    process_tree,
    run_load,
    sequential_latency,
    start_envoy,
    start_sims,
    summary,
    table,
    workdir,
)

from router.config import load_config  # noqa: E402
from router.envoyconf import EnvoyPorts, build_envoy_config  # noqa: E402
from router.local import Stack  # noqa: E402

BACKEND = "bench-backend"
PROMPT = "Write a Python function that reverses a list"
GOALS = {"p50_added_ms": 1.0, "p99_added_ms": 3.0, "throughput_ratio": 0.5}

# name → how the router runs
VARIANTS: dict[str, dict[str, Any]] = {
    "w1": {"label": "router, 1 worker", "workers": 1, "body_mode": "FULL_DUPLEX_STREAMED", "log_level": "info"},
    "w2": {"label": "router, 2 workers", "workers": 2, "body_mode": "FULL_DUPLEX_STREAMED", "log_level": "info"},
    "w1-buffered": {"label": "router, 1 worker, BUFFERED", "workers": 1, "body_mode": "BUFFERED", "log_level": "info"},
    "w1-quiet": {"label": "router, 1 worker, log warning", "workers": 1, "body_mode": "FULL_DUPLEX_STREAMED", "log_level": "warning"},
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
            "signals": {"keywords": [{
                "name": "code_keywords", "operator": "any", "method": "word",
                "keywords": ["python", "javascript", "rust", "function", "class", "bug", "compile", "refactor", "sql", "regex"],
            }]},
            "decisions": [
                {"name": "coding", "priority": 100, "modelRefs": [{"model": "coder"}],
                 "rules": {"operator": "OR", "conditions": [{"type": "keyword", "name": "code_keywords"}]}},
                {"name": "general", "priority": 0, "modelRefs": [{"model": "general"}]},
            ],
        },
    }


def request_body() -> bytes:
    return json.dumps({"model": "vllm-sr/auto", "max_tokens": 16,
                       "messages": [{"role": "user", "content": PROMPT}]}).encode()


def _check_routed(resp, data: bytes) -> None:
    decision = resp.getheader("x-vsr-selected-decision")
    model = resp.getheader("x-sim-received-model")
    if decision != "coding" or model != "sim-coder":
        raise RuntimeError(f"router did not route on the keyword decision: decision={decision!r} model={model!r}")


def _check_backend(resp, data: bytes) -> None:
    if resp.getheader("x-sim-backend") != BACKEND:
        raise RuntimeError("the answer did not come from the simulated backend")


def measure(name: str, url: str, args: argparse.Namespace, meter: CpuMeter, wd: Path, check) -> dict[str, Any]:
    body = request_body()
    t0 = time.monotonic()
    seq = sequential_latency(url, body, {}, args.requests, args.warmup, check)
    out: dict[str, Any] = {"target": name, "sequential_ms": {k: round(v, 4) for k, v in summary(seq).items()}, "load": {}}
    if not args.no_load:
        for c in args.concurrency:
            res = run_load(url, body, {}, c, args.duration, meter, wd)
            out["load"][str(c)] = res.as_dict()
    print(f"  {name}: done in {time.monotonic() - t0:.0f}s", flush=True)
    return out


def _router_pids(stack: Stack) -> list[int]:
    return process_tree(stack.procs["router"].pid)


def profile_router(stack: Stack, url: str, args: argparse.Namespace, wd: Path) -> dict[str, Any]:
    """py-spy samples every router process while c32 load runs; returns the hottest functions."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {"error": "py-spy not installed (`.venv/bin/pip install py-spy`)"}
    raw = wd / "router-profile.txt"
    svg = wd / "router-profile.svg"
    pid = stack.procs["router"].pid
    dur = max(3, int(args.duration))
    recs = [subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(dur), "-r", "200", "--nonblocking",
                              "-f", fmt_, "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for fmt_, out in (("raw", raw), ("flamegraph", svg))]
    time.sleep(0.5)
    try:
        run_load(url, request_body(), {}, 32, dur + 1, None, wd)
    finally:
        for r in recs:
            try:
                r.wait(dur + 30)
            except subprocess.TimeoutExpired:
                r.kill()
                r.wait()
    if not raw.exists():
        err = recs[0].stderr.read().decode(errors="replace") if recs[0].stderr else ""
        return {"error": f"py-spy produced nothing: {err[-400:]}"}
    return summarize_profile(raw.read_text(), svg if svg.exists() else None)


def summarize_profile(text: str, svg: Path | None, top: int = 25) -> dict[str, Any]:
    """Collapsed stacks → inclusive share per function and per bucket (the ext_proc hot path's parts)."""
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    buckets: collections.Counter[str] = collections.Counter()
    rules = [  # first match on the stack (leaf first) wins
        ("logging (structlog)", ("structlog", "logging/__init__")),
        ("pydantic parse/validate", ("pydantic", "parse_chat_body", "model_validate")),
        ("orjson", ("orjson",)),
        ("protobuf build (wire.py)", ("wire.py",)),
        ("signals/decision", ("router/signals", "router/decisions")),
        ("grpc aio (framing, cython)", ("grpc", "_cython")),
        ("asyncio/uvloop scheduling", ("asyncio", "uvloop")),
    ]
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        funcs = []
        for f in frames:
            name = f.split(" (", 1)[0]
            where = f.split(" (", 1)[1].rstrip(")") if " (" in f else ""
            funcs.append((name, where))
        seen = set()
        for name, where in funcs:
            key = f"{name} ({where.split('site-packages/')[-1].split('main/')[-1]})"
            if key not in seen:
                inclusive[key] += n
                seen.add(key)
        if funcs:
            name, where = funcs[-1]
            self_time[f"{name} ({where.split('site-packages/')[-1].split('main/')[-1]})"] += n
        joined = ";".join(frames[::-1])
        idle = any(x in frames[-1] for x in ("epoll_wait", "select (", "_run_once", "poll (")) and len(frames) < 8
        bucket = "idle / waiting" if idle else "other"
        if not idle:
            leafward = frames[::-1]
            for label, keys in rules:
                if any(any(k in fr for k in keys) for fr in leafward[:6]):
                    bucket = label
                    break
        buckets[bucket] += n
        _ = joined
    share = lambda c: [(k, round(100 * v / total, 1)) for k, v in c.most_common(top)]  # noqa: E731
    return {"samples": total, "buckets_pct": dict(share(buckets)), "inclusive_pct": share(inclusive),
            "self_pct": share(self_time), "flamegraph": str(svg) if svg else None}


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    by = {r["target"]: r for r in results}
    base = by.get("envoy-alone")
    rows = []
    cs = [str(c) for c in args.concurrency] if not args.no_load else []
    for r in results:
        s = r["sequential_ms"]
        row = [r["target"], fmt(s["p50"]), fmt(s["p90"]), fmt(s["p99"])]
        if base and r["target"].startswith("router"):
            b = base["sequential_ms"]
            r["added_ms"] = {"p50": round(s["p50"] - b["p50"], 3), "p99": round(s["p99"] - b["p99"], 3)}
            row += [fmt(s["p50"] - b["p50"]), fmt(s["p99"] - b["p99"])]
        else:
            row += ["-", "-"]
        for c in cs:
            ld = r["load"][c]
            row.append(f"{ld['rps']:.0f}" + (f" ({ld['errors']} err)" if ld["errors"] else ""))
            if base and base is not r:
                ratio = ld["rps"] / base["load"][c]["rps"]
                r.setdefault("throughput_ratio", {})[c] = round(ratio, 3)
                row.append(f"{ratio:.2f}")
            else:
                row.append("-")
            row.append(fmt(ld["p99_ms"]))
        rows.append(row)
    headers = ["target", "seq p50 ms", "seq p90 ms", "seq p99 ms", "added p50", "added p99"]
    for c in cs:
        headers += [f"c{c} req/s", f"c{c} ÷ envoy", f"c{c} p99 ms"]
    print()
    print(f"Sequential: {args.requests} keep-alive requests after {args.warmup} warm-up; load: "
          f"{args.duration:g}s per concurrency, {results[0]['load'].get(cs[0], {}).get('tool', '-') if cs else '-'}")
    print(table(headers, rows))

    if cs:
        print("\nCPU seconds per 1,000 requests during load (all threads of each process group):")
        crow = []
        groups = sorted({g for r in results for c in cs for g in r["load"][c]["cpu_s"]})
        for r in results:
            for c in cs:
                ld = r["load"][c]
                per_k = {g: 1000 * v / max(1, ld["requests"]) for g, v in ld["cpu_s"].items()}
                r["load"][c]["cpu_ms_per_request"] = {g: round(v, 3) for g, v in per_k.items()}
                crow.append([r["target"], c, *[fmt(per_k.get(g)) for g in groups]])
        print(table(["target", "conc", *groups], crow))

    verdict = {}
    for r in results:
        if "added_ms" in r:
            ratio = min(r.get("throughput_ratio", {}).values(), default=None)
            verdict[r["target"]] = {
                "p50_added_ok": r["added_ms"]["p50"] <= GOALS["p50_added_ms"],
                "p99_added_ok": r["added_ms"]["p99"] <= GOALS["p99_added_ms"],
                "throughput_ok": None if ratio is None else ratio >= GOALS["throughput_ratio"],
            }
    print("\nGoals (not asserted): p50 added <= 1 ms, p99 added <= 3 ms, router req/s >= 0.5x Envoy alone")
    for name, v in verdict.items():
        print(f"  {name}: " + ", ".join(f"{k}={'yes' if ok else ('-' if ok is None else 'NO')}" for k, ok in v.items()))
    return verdict


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="sequential requests per target (default 2000)")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of load per concurrency level (default 8)")
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[8, 32])
    ap.add_argument("--variants", default="w1,w2,w1-buffered", help=f"router variants, from {','.join(VARIANTS)}")
    ap.add_argument("--no-load", action="store_true", help="sequential latency only")
    ap.add_argument("--profile", action="store_true", help="py-spy the 1-worker router under c32 load")
    ap.add_argument("--json", type=Path, help="also write the JSON result here")
    ap.add_argument("--quick", action="store_true", help="smoke run: 300 requests, 3 s load")
    args = ap.parse_args(argv)
    if args.quick:
        args.requests, args.warmup, args.duration = 300, 50, 3.0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")

    info = machine()
    print_machine(info)
    wd = workdir("router-bench-")
    results: list[dict[str, Any]] = []
    profile: dict[str, Any] | None = None
    with Cleanup() as cleanup:
        backend_port = pick_port()
        sim = start_sims(cleanup, [{"name": BACKEND, "port": backend_port, "models": ["sim-general", "sim-coder"],
                                    "latency_ms": 0, "tps": 0, "max_tokens": 16, "request_log_size": 0}], wd)
        cfg_path = wd / "router-bench.yaml"
        cfg_path.write_text(yaml.safe_dump(router_config(backend_port), sort_keys=False))
        config = load_config(cfg_path)

        # (a) Envoy alone: same generated config minus the ext_proc filter, one fixed cluster.
        plain_port, plain_admin = pick_port(), pick_port()
        plain = start_envoy(cleanup, build_envoy_config(
            config, EnvoyPorts(listen_host="127.0.0.1", listen_port=plain_port, admin_port=plain_admin),
            ext_proc=False, default_cluster=BACKEND), plain_admin, wd, "envoy-alone")
        sim_pids = lambda: [sim.pid]  # noqa: E731

        print(f"workdir {wd}; backend :{backend_port}; Envoy alone :{plain_port}", flush=True)
        direct_url = f"http://127.0.0.1:{backend_port}/v1/chat/completions"
        results.append(measure("backend direct", direct_url, args, CpuMeter({"sim": sim_pids}), wd, _check_backend))
        results.append(measure("envoy-alone", f"http://127.0.0.1:{plain_port}/v1/chat/completions", args,
                               CpuMeter({"envoy": lambda: [plain.pid], "sim": sim_pids}), wd, _check_backend))

        # (b) Envoy + router, one variant at a time (the baseline Envoy stays up, idle).
        for key in variants:
            v = VARIANTS[key]
            stack = cleanup.stack(Stack(cfg_path, listen_port=pick_port(), grpc_port=pick_port(), admin_port=pick_port(),
                                        envoy_admin_port=pick_port(), workdir=wd / key, quiet=True, log_format="json",
                                        log_level=v["log_level"], body_mode=v["body_mode"],
                                        router_args=["--workers", str(v["workers"])]))
            (wd / key).mkdir(exist_ok=True)
            stack.start()
            if v["workers"] > 1:
                _wait_workers(stack, v["workers"])
            meter = CpuMeter({"envoy": lambda s=stack: [s.procs["envoy"].pid], "router": lambda s=stack: _router_pids(s),
                              "sim": sim_pids})
            res = measure(v["label"], f"{stack.url}/v1/chat/completions", args, meter, wd, _check_routed)
            res["variant"] = key
            res["router_connections"] = _grpc_conn_spread(stack)
            results.append(res)
            if args.profile and key == "w1":
                print("  profiling the router with py-spy under c32 load ...", flush=True)
                profile = profile_router(stack, f"{stack.url}/v1/chat/completions", args, wd)
            stack.stop()
            cleanup.forget(stack)

    verdict = report(results, args)
    if profile:
        print_profile(profile)
    blob = {"bench": "router", "machine": info, "goals": GOALS,
            "settings": {"requests": args.requests, "warmup": args.warmup, "duration_s": args.duration,
                         "concurrency": args.concurrency, "variants": variants},
            "results": results, "verdict": verdict, "profile": profile}
    print("\nJSON:")
    print(json.dumps(blob, indent=None))
    if args.json:
        args.json.write_text(json.dumps(blob, indent=2))
    return 0


def _wait_workers(stack: Stack, workers: int, timeout: float = 30.0) -> None:
    """Extra workers start after the first answered /readyz: wait until all of them run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(_router_pids(stack)) >= workers:
            time.sleep(2.0)  # let them import and bind
            return
        time.sleep(0.2)
    raise RuntimeError(f"only {len(_router_pids(stack))} of {workers} router processes started")


def _grpc_conn_spread(stack: Stack) -> dict[str, int]:
    """How Envoy's ext_proc connections landed on the router processes (SO_REUSEPORT hashing)."""
    port = stack.grpc_port
    spread: dict[str, int] = {}
    try:
        out = subprocess.run(["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    for pid in _router_pids(stack):
        spread[str(pid)] = out.count(f"pid={pid},")
    return spread


def print_profile(p: dict[str, Any]) -> None:
    print("\npy-spy, router (1 worker) under c32 load:")
    if "error" in p:
        print("  " + p["error"])
        return
    print(f"  {p['samples']} samples; flamegraph: {p['flamegraph']}")
    print("  by bucket (leaf-most match): " + ", ".join(f"{k} {v}%" for k, v in p["buckets_pct"].items()))
    print("  inclusive (top):")
    for name, share in p["inclusive_pct"][:20]:
        print(f"    {share:5.1f}%  {name}")
    print("  self (top):")
    for name, share in p["self_pct"][:15]:
        print(f"    {share:5.1f}%  {name}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nbench-router: interrupted; everything it started was stopped", file=sys.stderr)
        sys.exit(130)
