"""Fusion orchestration overhead against simulated backends of known latency (`make bench-fusion`).

Panel members answer after 50 / 80 / 120 ms, the judge after 60 ms per call (analysis, then synthesis),
so the critical path of one non-stream Fusion request is 120 + 60 + 60 = 240 ms. The bench drives
``vllm-sr/fusion`` requests through the real Envoy + ``fusion-router serve`` (bench/fusion-bench.yaml)
and reports, for each looper mode (sub-calls back through Envoy, the product default, and straight to
the backends):

* non-stream: client wall time − critical path = end-to-end overhead; minus three times the cost of one
  plain HTTP call to a simulated backend (measured here by calling a sim directly) = orchestration
  overhead (goal <= 2 ms p50). A per-request timeline from the sims' request logs (arrival times,
  correlated by x-request-id) shows where the milliseconds go: ingress, panel->judge, judge->synthesis, egress;
* stream: time to the first content byte at the client minus the synthesis call's own first-token time
  (measured from the synthesis request's arrival at the sim, and by sending the identical synthesis
  request straight to the sim) = relay overhead (goal <= 5 ms);
* concurrency: bursts of 16 concurrent Fusion requests, total time vs one request alone.

Phase ``loopers`` (bench/looper_bench.py, bench/looper-bench.yaml): every looper algorithm's wall time
against its critical path and its calls/tokens per request; adaptive Fusion at gate pass rates
0 / 50 / 90 % against plain Fusion; confidence escalation against asking the large model directly;
Fusion with one member 10x slower and ``min_successful_responses`` = panel - 1 against waiting for all.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import looper_bench
from common import (
    Cleanup,
    CpuMeter,
    background_share,
    fmt,
    machine,
    pct,
    pick_port,
    print_machine,
    start_sims,
    summary,
    table,
    wait_quiet,
    workdir,
)

from router.local import Stack

CONFIG = Path(__file__).resolve().parent / "fusion-bench.yaml"
PANEL_MS = {"panel-fast": 50.0, "panel-mid": 80.0, "panel-slow": 120.0}
JUDGE_MS = 60.0
GOALS = {"orchestration_overhead_p50_ms": 2.0, "stream_relay_overhead_p50_ms": 5.0}
PROMPT = "Please deliberate: what are the trade-offs between B-trees and LSM-trees for a write-heavy database?"
STREAM_PROMPT = PROMPT + " (streamjudge)"


def sim_specs(config: dict[str, Any], tps: float) -> list[dict[str, Any]]:
    served = {
        b["name"]: [m["served_model_id"] for m in config["models"] if m["backend"] == b["name"]] for b in config["backends"]
    }
    specs = []
    for b in config["backends"]:
        name = b["name"]
        spec: dict[str, Any] = {
            "name": name,
            "port": int(b["endpoint"].rsplit(":", 1)[1]),
            "models": served[name],
            "request_log_size": 5000,
            "max_tokens": 32,
        }
        if name in PANEL_MS:
            spec["latency_ms"] = PANEL_MS[name]
        else:
            spec.update(latency_ms=JUDGE_MS, mode="judge_json", tps=tps if name == "judge-stream" else 0)
        specs.append(spec)
    return specs


def with_ports(config: dict[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(config)
    for b in config["backends"]:
        b["endpoint"] = f"http://127.0.0.1:{pick_port()}"
    return config


# --------------------------------------------------------------------------- client side


def _chat(prompt: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "vllm-sr/fusion", "messages": [{"role": "user", "content": prompt}]}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


async def fusion_once(session: aiohttp.ClientSession, url: str, rid: str) -> dict[str, Any]:
    t0 = time.time()
    p0 = time.perf_counter()
    async with session.post(url, json=_chat(PROMPT, False), headers={"x-request-id": rid}) as resp:
        data = await resp.read()
        status = resp.status
    wall = (time.perf_counter() - p0) * 1000
    if status != 200:
        raise RuntimeError(f"Fusion request failed: HTTP {status}: {data[:400]!r}")
    doc = json.loads(data)
    trace = doc.get("fusion") or {}
    if trace.get("decision") != "bench_fusion" or len(trace.get("answered_models", [])) != 3:
        raise RuntimeError(f"unexpected Fusion trace: {json.dumps(trace)[:400]}")
    return {"rid": rid, "t0": t0, "t1": t0 + wall / 1000, "wall_ms": wall, "trace": trace}


async def fusion_stream_once(session: aiohttp.ClientSession, url: str, rid: str) -> dict[str, Any]:
    t0 = time.time()
    p0 = time.perf_counter()
    first_byte = first_content = None
    trace: dict[str, Any] = {}
    comments = 0
    async with session.post(url, json=_chat(STREAM_PROMPT, True), headers={"x-request-id": rid}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"Fusion stream failed: HTTP {resp.status}: {(await resp.read())[:400]!r}")
        async for raw in resp.content:
            now = time.perf_counter()
            first_byte = first_byte or now
            line = raw.strip()
            if line.startswith(b":"):
                comments += 1
                continue
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                break
            doc = json.loads(payload)
            if "error" in doc:
                raise RuntimeError(f"Fusion stream error: {payload[:400]!r}")
            if doc.get("fusion"):
                trace = doc["fusion"]
            for ch in doc.get("choices") or []:
                if first_content is None and (ch.get("delta") or {}).get("content"):
                    first_content = now
    end = time.perf_counter()
    if first_content is None or trace.get("decision") != "bench_fusion_stream":
        raise RuntimeError(f"no content or unexpected decision in the stream: {json.dumps(trace)[:300]}")
    ms = lambda t: (t - p0) * 1000  # noqa: E731
    return {
        "rid": rid,
        "t0": t0,
        "first_byte_ms": ms(first_byte),
        "first_content_ms": ms(first_content),
        "t_first_content": t0 + ms(first_content) / 1000,
        "wall_ms": ms(end),
        "comments": comments,
        "trace": trace,
    }


async def direct_call(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """One call straight to a sim: wall time, and for streams the time to the first content delta."""
    t0 = time.time()
    p0 = time.perf_counter()
    first = None
    async with session.post(url, json=body) as resp:
        if body.get("stream"):
            async for raw in resp.content:
                if first is None and b'"content":"' in raw and b'"content":""' not in raw:
                    first = time.perf_counter()
        else:
            await resp.read()
    wall = (time.perf_counter() - p0) * 1000
    return {
        "t0": t0,
        "wall_ms": wall,
        "first_content_ms": None if first is None else (first - p0) * 1000,
        "t_first_content": None if first is None else t0 + (first - p0),
    }


async def sim_log(session: aiohttp.ClientSession, base: str) -> list[dict[str, Any]]:
    async with session.get(f"{base}/_sim/requests") as resp:
        return await resp.json()


async def clear_logs(session: aiohttp.ClientSession, sims: dict[str, str]) -> None:
    for base in sims.values():
        async with session.delete(f"{base}/_sim/requests"):
            pass


def _is_analysis(entry: dict[str, Any]) -> bool:
    msgs = (entry.get("body") or {}).get("messages") or []
    return bool(msgs) and msgs[-1].get("role") == "user" and "consensus" in str(msgs[-1].get("content", "")).lower()


def _by_rid(entries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        out.setdefault(e["headers"].get("x-request-id", "?"), []).append(e)
    return out


# --------------------------------------------------------------------------- phases


async def run_mode(mode: str, stack: Stack, sims: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    url = f"{stack.url}/v1/chat/completions"
    tag = uuid.uuid4().hex[:6]
    conn = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as s:
        for i in range(args.warmup):
            await fusion_once(s, url, f"warm-{tag}-{i}")
            await fusion_stream_once(s, url, f"warmS-{tag}-{i}")
        out: dict[str, Any] = {"mode": mode}

        # ---- non-stream, sequential
        await clear_logs(s, sims)
        runs = [await fusion_once(s, url, f"ns-{tag}-{i}") for i in range(args.requests)]
        logs = {name: _by_rid(await sim_log(s, base)) for name, base in sims.items()}
        critical = max(PANEL_MS.values()) + 2 * JUDGE_MS
        e2e = [r["wall_ms"] - critical for r in runs]
        seg: dict[str, list[float]] = {
            k: [] for k in ("ingress", "fanout_spread", "panel_to_judge", "judge_to_synthesis", "egress")
        }
        for r in runs:
            rid = r["rid"]
            panel = {n: logs[n].get(rid, []) for n in PANEL_MS}
            judge = sorted(logs["judge"].get(rid, []), key=lambda e: e["time"])
            if any(len(v) != 1 for v in panel.values()) or len(judge) != 2 or not _is_analysis(judge[0]):
                continue  # x-request-id did not reach the sims (or retries): no timeline for this one
            arrivals = {n: v[0]["time"] for n, v in panel.items()}
            panel_done = max(arrivals[n] + PANEL_MS[n] / 1000 for n in PANEL_MS)
            seg["ingress"].append((min(arrivals.values()) - r["t0"]) * 1000)
            seg["fanout_spread"].append((max(arrivals.values()) - min(arrivals.values())) * 1000)
            seg["panel_to_judge"].append((judge[0]["time"] - panel_done) * 1000)
            seg["judge_to_synthesis"].append((judge[1]["time"] - judge[0]["time"] - JUDGE_MS / 1000) * 1000)
            seg["egress"].append((r["t1"] - judge[1]["time"] - JUDGE_MS / 1000) * 1000)
        traces = [r["trace"] for r in runs]
        inside = [t["latency_ms"]["total"] for t in traces]
        outside = [r["wall_ms"] - t["latency_ms"]["total"] for r, t in zip(runs, traces)]
        panel_overhead = [t["latency_ms"]["panel"] - max(x["latency_ms"] for x in t["responses"]) for t in traces]
        panel_calls = [max(x["latency_ms"] for x in t["responses"]) - max(PANEL_MS.values()) for t in traces]

        # ---- the cost of one plain call to a sim (any client pays it; three are on the critical path)
        judge_body = next((e["body"] for v in logs["judge"].values() for e in v if _is_analysis(e)), None)
        if judge_body is None:
            raise RuntimeError("no analysis request in the judge's log")
        direct = [await direct_call(s, f"{sims['judge']}/v1/chat/completions", judge_body) for _ in range(args.direct)]
        floor = [d["wall_ms"] - JUDGE_MS for d in direct]
        floor_p50 = pct(floor, 50)
        out["nonstream"] = {
            "requests": len(runs),
            "critical_path_ms": critical,
            "wall_ms": summary([r["wall_ms"] for r in runs]),
            "e2e_overhead_ms": summary(e2e),
            "sim_call_floor_ms": summary(floor),
            "orchestration_overhead_ms": summary([x - 3 * floor_p50 for x in e2e]),
            "timeline_ms": {k: summary(v) for k, v in seg.items()},
            "timeline_requests": len(seg["ingress"]),
            "trace_total_ms": summary(inside),
            "outside_looper_ms": summary(outside),
            "panel_stage_minus_slowest_call_ms": summary(panel_overhead),
            "slowest_panel_call_minus_sim_latency_ms": summary(panel_calls),
            "trace_stage_ms_p50": {k: pct([t["latency_ms"][k] for t in traces], 50) for k in traces[0]["latency_ms"]},
        }

        # ---- stream, sequential
        await clear_logs(s, sims)
        sruns = [await fusion_stream_once(s, url, f"st-{tag}-{i}") for i in range(args.stream_requests)]
        jlog = _by_rid(await sim_log(s, sims["judge-stream"]))
        synth_bodies = []
        since_arrival = []
        for r in sruns:
            entries = [e for e in jlog.get(r["rid"], []) if (e.get("body") or {}).get("stream")]
            if len(entries) == 1:
                synth_bodies.append(entries[0]["body"])
                since_arrival.append((r["t_first_content"] - entries[0]["time"]) * 1000)
        if not synth_bodies:
            raise RuntimeError("no streamed synthesis request in the judge-stream log (x-request-id not forwarded?)")
        await clear_logs(s, {"judge-stream": sims["judge-stream"]})
        ds = [await direct_call(s, f"{sims['judge-stream']}/v1/chat/completions", synth_bodies[0]) for _ in range(args.direct)]
        dlog = sorted(await sim_log(s, sims["judge-stream"]), key=lambda e: e["time"])
        own = [(d["t_first_content"] - e["time"]) * 1000 for d, e in zip(ds, dlog) if d["t_first_content"]]
        own_p50 = pct(own, 50)
        out["stream"] = {
            "requests": len(sruns),
            "first_byte_ms": summary([r["first_byte_ms"] for r in sruns]),
            "first_content_ms": summary([r["first_content_ms"] for r in sruns]),
            "wall_ms": summary([r["wall_ms"] for r in sruns]),
            "synthesis_first_token_direct_ms": summary([d["first_content_ms"] for d in ds if d["first_content_ms"]]),
            "synthesis_arrival_to_first_content_ms": summary(since_arrival),
            "synthesis_arrival_to_first_content_direct_ms": summary(own),
            "relay_overhead_ms": summary([x - own_p50 for x in since_arrival]),
            # Upper bound: against the configured first-token time (latency + one token), so the sim's own
            # timer overshoot and HTTP handling count as overhead too.
            "synthesis_first_token_configured_ms": JUDGE_MS + 1000 / args.tps,
            "relay_overhead_vs_configured_ms": summary([x - (JUDGE_MS + 1000 / args.tps) for x in since_arrival]),
            "progress_comments_p50": pct([r["comments"] for r in sruns], 50),
            "content_before_end_ms_p50": pct([r["wall_ms"] - r["first_content_ms"] for r in sruns], 50),
            "trace_stage_ms_p50": {
                k: pct([r["trace"]["latency_ms"][k] for r in sruns], 50) for k in sruns[0]["trace"]["latency_ms"]
            },
        }

        # ---- concurrency bursts
        bursts = []
        for b in range(args.bursts):
            t0 = time.perf_counter()
            res = await asyncio.gather(*(fusion_once(s, url, f"c-{tag}-{b}-{i}") for i in range(args.concurrency)))
            bursts.append({"total_ms": (time.perf_counter() - t0) * 1000, "per_request_ms": [r["wall_ms"] for r in res]})
        single = out["nonstream"]["wall_ms"]["p50"]
        totals = [b["total_ms"] for b in bursts]
        per = [x for b in bursts for x in b["per_request_ms"]]
        out["concurrency"] = {
            "concurrency": args.concurrency,
            "bursts": args.bursts,
            "single_p50_ms": single,
            "burst_total_ms": summary(totals),
            "per_request_ms": summary(per),
            "burst_total_over_single": pct(totals, 50) / single,
            "throughput_fusion_per_s": args.concurrency / (pct(totals, 50) / 1000),
        }
    return out


# --------------------------------------------------------------------------- report


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    verdict: dict[str, Any] = {}
    print(
        f"\nNon-stream: {args.requests} sequential Fusion requests per mode; critical path "
        f"{max(PANEL_MS.values()):g} (slowest panel) + {JUDGE_MS:g} (judge) + {JUDGE_MS:g} (synthesis) = "
        f"{max(PANEL_MS.values()) + 2 * JUDGE_MS:g} ms"
    )
    rows = []
    for r in results:
        n = r["nonstream"]
        rows.append(
            [
                r["mode"],
                fmt(n["wall_ms"]["p50"]),
                fmt(n["wall_ms"]["p99"]),
                fmt(n["e2e_overhead_ms"]["p50"]),
                fmt(n["e2e_overhead_ms"]["p99"]),
                fmt(n["sim_call_floor_ms"]["p50"]),
                fmt(n["orchestration_overhead_ms"]["p50"]),
                fmt(n["orchestration_overhead_ms"]["p99"]),
            ]
        )
    print(
        table(
            [
                "looper sub-calls",
                "wall p50",
                "wall p99",
                "e2e overhead p50",
                "e2e p99",
                "1 sim call (direct) p50",
                "orchestration p50",
                "orchestration p99",
            ],
            rows,
        )
    )
    print("\nWhere the end-to-end overhead goes (p50 ms; timeline from the sims' arrival times):")
    rows = []
    for r in results:
        n = r["nonstream"]
        t = n["timeline_ms"]
        rows.append(
            [
                r["mode"],
                *(fmt(t[k]["p50"]) for k in ("ingress", "fanout_spread", "panel_to_judge", "judge_to_synthesis", "egress")),
                fmt(n["outside_looper_ms"]["p50"]),
                fmt(n["panel_stage_minus_slowest_call_ms"]["p50"]),
                f"{n['timeline_requests']}/{n['requests']}",
            ]
        )
    print(
        table(
            [
                "mode",
                "ingress",
                "fan-out spread",
                "panel->judge",
                "judge->synth",
                "egress",
                "outside looper",
                "panel stage - slowest call",
                "timelines",
            ],
            rows,
        )
    )

    print(f"\nStream: {args.stream_requests} sequential streamed Fusion requests per mode")
    rows = []
    for r in results:
        st = r["stream"]
        rows.append(
            [
                r["mode"],
                fmt(st["first_byte_ms"]["p50"]),
                fmt(st["first_content_ms"]["p50"]),
                fmt(st["wall_ms"]["p50"]),
                fmt(st["synthesis_arrival_to_first_content_direct_ms"]["p50"]),
                fmt(st["synthesis_arrival_to_first_content_ms"]["p50"]),
                fmt(st["relay_overhead_ms"]["p50"]),
                fmt(st["relay_overhead_ms"]["p99"]),
                fmt(st["relay_overhead_vs_configured_ms"]["p50"]),
            ]
        )
    print(
        table(
            [
                "mode",
                "first byte",
                "first content",
                "done",
                "synth own 1st token (direct)",
                "synth arrival -> client 1st content",
                "relay overhead p50",
                "relay p99",
                f"relay vs configured {JUDGE_MS + 1000 / args.tps:g} ms, p50",
            ],
            rows,
        )
    )

    print(f"\nConcurrency: {args.bursts} bursts of {args.concurrency} concurrent non-stream Fusion requests")
    rows = []
    for r in results:
        c = r["concurrency"]
        rows.append(
            [
                r["mode"],
                fmt(c["single_p50_ms"]),
                fmt(c["burst_total_ms"]["p50"]),
                fmt(c["burst_total_over_single"]),
                fmt(c["per_request_ms"]["p50"]),
                fmt(c["per_request_ms"]["max"]),
                fmt(c["throughput_fusion_per_s"], 1),
            ]
        )
    print(
        table(
            ["mode", "single p50", "burst total p50", "burst / single", "per-request p50", "per-request max", "Fusion req/s"],
            rows,
        )
    )

    print("\nGoals (reported, not asserted): orchestration overhead <= 2 ms p50; stream relay overhead <= 5 ms p50")
    for r in results:
        o = r["nonstream"]["orchestration_overhead_ms"]["p50"]
        s = r["stream"]["relay_overhead_ms"]["p50"]
        verdict[r["mode"]] = {
            "orchestration_ok": o <= GOALS["orchestration_overhead_p50_ms"],
            "stream_relay_ok": s <= GOALS["stream_relay_overhead_p50_ms"],
        }
        print(
            f"  {r['mode']}: orchestration {o:.2f} ms -> {'yes' if o <= 2 else 'NO'}; "
            f"stream relay {s:.2f} ms -> {'yes' if s <= 5 else 'NO'}"
        )
    return verdict


def _round(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 3)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=40, help="sequential non-stream Fusion requests per mode (default 40)")
    ap.add_argument("--stream-requests", type=int, default=25, help="sequential streamed Fusion requests per mode (default 25)")
    ap.add_argument("--direct", type=int, default=20, help="direct calls to a sim for the per-call floor (default 20)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--bursts", type=int, default=5)
    ap.add_argument("--tps", type=float, default=500.0, help="tokens/s of the streaming judge (default 500)")
    ap.add_argument(
        "--modes",
        default="envoy,envoy-main,direct",
        help="looper sub-call paths: envoy (Envoy's internal listener, the default config), envoy-main "
        "(the main listener, ext_proc again with the looper marker) and/or direct (straight to backends)",
    )
    ap.add_argument("--settle", type=float, default=15.0, help="wait up to this long for other work on the machine to calm down")
    ap.add_argument("--json", type=Path, help="also write the JSON result here")
    ap.add_argument(
        "--phases",
        default="overhead,loopers",
        help="overhead (Fusion orchestration overhead per looper mode) and/or loopers (every looper "
        "algorithm against its critical path and its baselines; bench/looper-bench.yaml)",
    )
    ap.add_argument("--looper-requests", type=int, default=40, help="requests per looper scenario (default 40)")
    ap.add_argument("--quick", action="store_true", help="smoke run: few requests")
    args = ap.parse_args(argv)
    if args.quick:
        args.requests, args.stream_requests, args.direct, args.warmup, args.bursts, args.settle = 8, 5, 5, 1, 2, 0
        args.looper_requests = 6
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if not phases or not set(phases) <= {"overhead", "loopers"}:
        ap.error("--phases takes overhead and/or loopers")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()] if "overhead" in phases else []
    if not set(modes) <= {"envoy", "envoy-main", "direct"}:
        ap.error("--modes takes envoy, envoy-main and/or direct")

    info = machine()
    print_machine(info)
    wd = workdir("fusion-bench-")
    started = time.monotonic()
    base_cfg = with_ports(yaml.safe_load(CONFIG.read_text()))
    looper_cfg = with_ports(yaml.safe_load(looper_bench.CONFIG.read_text()))
    results = []
    loopers: dict[str, Any] = {}
    with Cleanup() as cleanup:
        specs = (sim_specs(base_cfg, args.tps) if modes else []) + (
            looper_bench.sim_specs(looper_cfg) if "loopers" in phases else []
        )
        start_sims(cleanup, specs, wd)
        sims = {b["name"]: b["endpoint"] for b in base_cfg["backends"]}
        stacks: dict[str, Stack] = {}
        for mode in modes:
            cfg = copy.deepcopy(base_cfg)
            if mode == "direct":
                cfg["global"]["integrations"]["looper"].pop("endpoint", None)
            elif mode == "envoy-main":
                cfg["global"]["integrations"]["looper"]["endpoint"] = "http://127.0.0.1:8801/v1/chat/completions"
            path = wd / f"fusion-bench-{mode}.yaml"
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            (wd / mode).mkdir()
            stacks[mode] = cleanup.stack(
                Stack(
                    path,
                    listen_port=pick_port(),
                    grpc_port=pick_port(),
                    admin_port=pick_port(),
                    envoy_admin_port=pick_port(),
                    internal_port=pick_port(),
                    workdir=wd / mode,
                    quiet=True,
                    log_format="json",
                )
            )
            stacks[mode].start()
        if "loopers" in phases:
            path = wd / "looper-bench.yaml"
            path.write_text(yaml.safe_dump(looper_cfg, sort_keys=False))
            (wd / "loopers").mkdir()
            stacks["loopers"] = cleanup.stack(
                Stack(
                    path,
                    listen_port=pick_port(),
                    grpc_port=pick_port(),
                    admin_port=pick_port(),
                    envoy_admin_port=pick_port(),
                    internal_port=pick_port(),
                    workdir=wd / "loopers",
                    quiet=True,
                    log_format="json",
                )
            )
            stacks["loopers"].start()
        print(f"workdir {wd}; " + "; ".join(f"{m}: {st.url}" for m, st in stacks.items()), flush=True)
        if args.settle:
            share = wait_quiet(args.settle)
            print(f"background CPU before measuring: {100 * share:.0f}% of all cores", flush=True)
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        for mode in modes:
            t0 = time.monotonic()
            meter = CpuMeter({"bench processes": cleanup.pids})
            meter.start()
            res = runner(run_mode(mode, stacks[mode], sims, args))
            cpu = meter.stop()
            res["background_cpu_share"] = round(background_share(cpu), 3)
            results.append(res)
            print(
                f"  {mode}: done ({time.monotonic() - t0:.0f}s; other work on the machine meanwhile: "
                f"{100 * res['background_cpu_share']:.0f}% of all cores)",
                flush=True,
            )
        if "loopers" in phases:
            t0 = time.monotonic()
            meter = CpuMeter({"bench processes": cleanup.pids})
            meter.start()
            looper_sims = {b["name"]: b["endpoint"] for b in looper_cfg["backends"]}
            runs = runner(
                looper_bench.run_loopers(
                    stacks["loopers"].url, looper_sims, looper_cfg, args.looper_requests, min(args.warmup, 2)
                )
            )
            cpu = meter.stop()
            loopers = {
                "requests_per_scenario": args.looper_requests,
                "background_cpu_share": round(background_share(cpu), 3),
                "scenarios": looper_bench.summarize(runs),
            }
            print(
                f"  loopers: done ({time.monotonic() - t0:.0f}s; other work on the machine meanwhile: "
                f"{100 * loopers['background_cpu_share']:.0f}% of all cores)",
                flush=True,
            )

    verdict = report(results, args) if results else {}
    if loopers:
        looper_bench.report(loopers["scenarios"], args.looper_requests)
    print(f"\nbench-fusion took {time.monotonic() - started:.0f}s")
    blob = _round(
        {
            "bench": "fusion",
            "machine": info,
            "goals": GOALS,
            "settings": {k: v for k, v in vars(args).items() if k != "json"} | {"panel_ms": PANEL_MS, "judge_ms": JUDGE_MS},
            "results": results,
            "verdict": verdict,
            "loopers": loopers,
        }
    )
    blob["settings"]["json"] = str(args.json) if args.json else None
    print("\nJSON:")
    print(json.dumps(blob, default=str))
    if args.json:
        args.json.write_text(json.dumps(blob, indent=2, default=str))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nbench-fusion: interrupted; everything it started was stopped", file=sys.stderr)
        sys.exit(130)
