"""The looper-toolbox phase of `make bench-fusion` (bench/fusion_bench.py, `--phases loopers`).

Every algorithm through the real Envoy + `fusion-router serve` (bench/looper-bench.yaml), against
simulated backends of known latency and token confidence, with sub-calls re-entering Envoy's internal
listener (the product default). Scenarios run interleaved (one request of each in turn), so drifting
background load hits them alike. For each request the bench knows its critical path from the trace
(which calls the run had to wait for, at the sims' configured latencies) and counts the calls the
backends actually received (their request logs, by x-request-id). Baselines run in the same turns:

* plain Fusion for adaptive Fusion at gate pass rates 0 / 50 / 90 % (the pass rate is set by the mix
  of requests whose gate model is confident, 0.95, or not, 0.3, against a threshold of 0.8);
* the large model asked directly for confidence escalation;
* Fusion waiting for every panel member for Fusion with one member 10x slower and
  ``min_successful_responses`` = panel - 1.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from common import (  # bench/ is on sys.path (fusion_bench.py puts it there)
    fmt,
    pct,
    summary,
    table,
)

CONFIG = Path(__file__).resolve().parent / "looper-bench.yaml"
# Simulated latency (ms before the answer) per backend, and token confidence per served model.
BACKEND_MS = {
    "lp-panel-a": 50.0,
    "lp-panel-b": 80.0,
    "lp-panel-c": 120.0,
    "lp-judge": 60.0,
    "lp-tier-small": 30.0,
    "lp-tier-medium": 60.0,
    "lp-tier-large": 120.0,
    "lp-quorum-a": 50.0,
    "lp-quorum-b": 50.0,
    "lp-quorum-slow": 500.0,
}
CONFIDENCE = {
    "sim/gate-sure": 0.95,
    "sim/gate-unsure": 0.3,
    "sim/tier-small": 0.3,
    "sim/tier-medium": 0.5,
    "sim/tier-large": 0.95,
}
PASS_RATES = (0.0, 0.5, 0.9)
QUESTION = "what are the trade-offs between B-trees and LSM-trees for a write-heavy database?"


def sim_specs(config: dict[str, Any]) -> list[dict[str, Any]]:
    specs = []
    for b in config["backends"]:
        served = [m["served_model_id"] for m in config["models"] if m["backend"] == b["name"]]
        specs.append(
            {
                "name": b["name"],
                "port": int(b["endpoint"].rsplit(":", 1)[1]),
                "models": served,
                "latency_ms": BACKEND_MS[b["name"]],
                "max_tokens": 32,
                "request_log_size": 20000,
                "mode": "judge_json" if b["name"] == "lp-judge" else "normal",
                "model_confidence": {m: CONFIDENCE[m] for m in served if m in CONFIDENCE},
            }
        )
    return specs


def model_ms(config: dict[str, Any]) -> dict[str, float]:
    return {m["name"]: BACKEND_MS[m["backend"]] for m in config["models"]}


# --------------------------------------------------------------------------- critical paths from traces


def critical_path(trace: dict[str, Any] | None, algorithm: str | None, lat: dict[str, float], routed_model: str | None) -> float:
    """The time the run had to wait for calls, at the sims' latencies: what no orchestration can beat."""
    if algorithm is None:
        return lat[routed_model or ""]
    assert trace is not None
    if algorithm == "confidence":
        return sum(lat[a["model"]] for a in trace["attempts"])
    if algorithm == "remom":
        return sum(max(lat[m] for m in r["models"]) for r in trace["rounds"]) + lat[trace["synthesis_model"]]
    gate = trace.get("gate")
    gate_ms = lat[gate["model"]] if gate else 0.0
    if trace["outcome"] == "gated":
        return gate_ms
    reused = [r["model"] for r in trace.get("responses") or [] if r.get("from_gate")]
    called = sorted(lat[m] for m in trace["analysis_models"] if m not in reused)
    need = trace["quorum"]["wanted"] - len(reused)  # the judge starts once this many called members answered
    panel_ms = called[need - 1] if need > 0 and called else 0.0
    return gate_ms + panel_ms + 2 * lat[trace["judge_model"]]


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    group: str  # which table it belongs to
    algorithm: str | None  # trace key; None for a plain routed request
    body: Callable[[int], dict[str, Any]]  # request i -> JSON body
    decisions: tuple[str, ...]  # a trace from another decision is a bench bug


def _chat(prompt: str, model: str = "vllm-sr/auto", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], **extra}


def _passes(i: int, rate: float) -> bool:
    """Request i of a run at ``rate``: exactly round(n * rate) of the first n pass, evenly spread."""
    return math.floor((i + 1) * rate + 1e-9) > math.floor(i * rate + 1e-9)


def _gate_mix(rate: float) -> Callable[[int], dict[str, Any]]:
    """Request i goes to the decision whose gate model is confident when it should pass at ``rate``."""
    return lambda i: _chat(f"{'gatepass' if _passes(i, rate) else 'gatefail'}: {QUESTION}")


def scenarios() -> list[Scenario]:
    out = [
        Scenario("Fusion, plain (baseline)", "adaptive", "fusion", lambda i: _chat(f"plainfusion: {QUESTION}"), ("fusion_plain",))
    ]
    for rate in PASS_RATES:
        out.append(
            Scenario(
                f"adaptive Fusion, gate passes {rate:.0%}",
                "adaptive",
                "fusion",
                _gate_mix(rate),
                ("adaptive_pass", "adaptive_fail"),
            )
        )
    out += [
        Scenario("large model asked directly (baseline)", "confidence", None, lambda i: _chat(QUESTION, model="tier-large"), ()),
        Scenario(
            "confidence, escalates to tier 3", "confidence", "confidence", lambda i: _chat(f"escalate: {QUESTION}"), ("cascade",)
        ),
        Scenario(
            "confidence, accepted at tier 1",
            "confidence",
            "confidence",
            lambda i: _chat(f"escalate: {QUESTION}", plugins=[{"id": "confidence", "threshold": 0.25}]),
            ("cascade",),
        ),
        Scenario("ReMoM, rounds [3, 2] + synthesis", "remom", "remom", lambda i: _chat(f"rounds: {QUESTION}"), ("rounds",)),
        Scenario(
            "Fusion waits for everyone (baseline)",
            "quorum",
            "fusion",
            lambda i: _chat(f"everyone: {QUESTION}"),
            ("fusion_everyone",),
        ),
        Scenario(
            "Fusion, min_successful_responses = 2 of 3",
            "quorum",
            "fusion",
            lambda i: _chat(f"quorum: {QUESTION}"),
            ("fusion_quorum",),
        ),
    ]
    return out


@dataclass
class Sample:
    rid: str
    wall_ms: float
    critical_ms: float
    outcome: str
    iterations: int
    tokens: int
    cancelled: int = 0
    calls_seen: int | None = None  # filled from the backends' request logs


@dataclass
class Result:
    scenario: Scenario
    samples: list[Sample] = field(default_factory=list)


async def _once(session: aiohttp.ClientSession, url: str, sc: Scenario, i: int, rid: str, lat: dict[str, float]) -> Sample:
    body = sc.body(i)
    p0 = time.perf_counter()
    async with session.post(url, json=body, headers={"x-request-id": rid}) as resp:
        data = await resp.read()
        status = resp.status
        selected = resp.headers.get("x-vsr-selected-model")
    wall = (time.perf_counter() - p0) * 1000
    if status != 200:
        raise RuntimeError(f"{sc.name}: HTTP {status}: {data[:400]!r}")
    doc = json.loads(data)
    trace = doc.get(sc.algorithm) if sc.algorithm else None
    if sc.algorithm is not None and (trace is None or trace["decision"] not in sc.decisions):
        raise RuntimeError(f"{sc.name}: unexpected trace {json.dumps(trace)[:400]}")
    return Sample(
        rid,
        wall,
        critical_path(trace, sc.algorithm, lat, selected),
        trace["outcome"] if trace else "routed",
        trace["iterations"] if trace else 1,
        int(doc["usage"]["total_tokens"]),
        len(trace.get("cancelled_models") or []) if trace else 0,
    )


async def run_loopers(stack_url: str, sims: dict[str, str], config: dict[str, Any], requests: int, warmup: int) -> list[Result]:
    url = f"{stack_url}/v1/chat/completions"
    lat = model_ms(config)
    scs = scenarios()
    results = [Result(sc) for sc in scs]
    tag = uuid.uuid4().hex[:6]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
        for w in range(warmup):
            for k, sc in enumerate(scs):
                await _once(s, url, sc, w, f"lw-{tag}-{k}-{w}", lat)
        for base in sims.values():
            async with s.delete(f"{base}/_sim/requests"):
                pass
        for i in range(requests):
            for k, (sc, res) in enumerate(zip(scs, results)):
                res.samples.append(await _once(s, url, sc, i, f"lp-{tag}-{k}-{i}", lat))
        seen: Counter[str] = Counter()
        for base in sims.values():
            async with s.get(f"{base}/_sim/requests") as resp:
                for entry in await resp.json():
                    if entry.get("path") == "/v1/chat/completions":
                        seen[entry["headers"].get("x-request-id", "?")] += 1
    for res in results:
        for smp in res.samples:
            smp.calls_seen = seen.get(smp.rid, 0)
    return results


# --------------------------------------------------------------------------- summary and report


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def summarize(results: list[Result]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for res in results:
        smp = res.samples
        walls = [x.wall_ms for x in smp]
        out[res.scenario.name] = {
            "group": res.scenario.group,
            "requests": len(smp),
            "outcomes": dict(Counter(x.outcome for x in smp)),
            "wall_ms": summary(walls),
            # A mix of gated and fused runs is bimodal: its median sits between the two modes.
            "wall_ms_by_outcome": {
                o: summary([x.wall_ms for x in smp if x.outcome == o]) for o in sorted({x.outcome for x in smp})
            },
            "critical_path_ms_mean": _mean([x.critical_ms for x in smp]),
            "overhead_ms": summary([x.wall_ms - x.critical_ms for x in smp]),
            "wall_over_critical_p50": pct([x.wall_ms / x.critical_ms for x in smp], 50),
            "calls_per_request": _mean([float(x.calls_seen or 0) for x in smp]),
            "trace_iterations_per_request": _mean([float(x.iterations) for x in smp]),
            "calls_match_trace": sum(x.calls_seen == x.iterations for x in smp),
            "tokens_per_request": _mean([float(x.tokens) for x in smp]),
            "cancelled_per_request": _mean([float(x.cancelled) for x in smp]),
        }
    return out


def report(s: dict[str, Any], requests: int) -> None:
    print(
        f"\nLooper toolbox: {requests} requests per scenario, interleaved, through Envoy (sub-calls via its internal "
        "listener). Critical path = the calls a run had to wait for, at the sims' latencies; calls = what the "
        "backends' request logs saw per request (= the trace's iterations in every row where the last column is full)."
    )
    rows = []
    for name, r in s.items():
        rows.append(
            [
                name,
                ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items())),
                fmt(r["calls_per_request"], 2),
                fmt(r["tokens_per_request"], 0),
                fmt(r["critical_path_ms_mean"]),
                fmt(r["wall_ms"]["p50"]),
                fmt(r["wall_ms"]["p99"]),
                fmt(r["overhead_ms"]["p50"]),
                fmt(r["overhead_ms"]["p99"]),
                fmt(r["wall_over_critical_p50"], 2),
                f"{r['calls_match_trace']}/{r['requests']}",
            ]
        )
    print(
        table(
            [
                "scenario",
                "outcomes",
                "calls/req",
                "tokens/req",
                "critical path (mean)",
                "wall p50",
                "wall p99",
                "overhead p50",
                "overhead p99",
                "wall/critical p50",
                "calls = trace",
            ],
            rows,
        )
    )

    plain = s["Fusion, plain (baseline)"]
    print("\nAdaptive Fusion against plain Fusion (same run; ratios = adaptive / plain):")
    rows = []
    for name, r in s.items():
        if r["group"] != "adaptive":
            continue
        gated = r["outcomes"].get("gated", 0) / r["requests"]
        by = r["wall_ms_by_outcome"]
        modes = " / ".join(fmt(by[o]["p50"]) if o in by else "-" for o in ("gated", "fused"))
        rows.append(
            [
                name,
                f"{gated:.0%}",
                fmt(r["calls_per_request"], 2),
                fmt(r["calls_per_request"] / plain["calls_per_request"], 2),
                fmt(r["tokens_per_request"], 0),
                fmt(r["tokens_per_request"] / plain["tokens_per_request"], 2),
                fmt(r["wall_ms"]["mean"]),
                fmt(r["wall_ms"]["mean"] / plain["wall_ms"]["mean"], 2),
                fmt(r["wall_ms"]["p50"]),
                fmt(r["wall_ms"]["p50"] / plain["wall_ms"]["p50"], 2),
                fmt(r["wall_ms"]["p99"]),
                fmt(r["wall_ms"]["p99"] / plain["wall_ms"]["p99"], 2),
                modes,
            ]
        )
    print(
        table(
            [
                "scenario",
                "gated",
                "mean calls",
                "÷ plain",
                "mean tokens",
                "÷ plain",
                "wall mean",
                "÷ plain",
                "wall p50",
                "÷ plain",
                "wall p99",
                "÷ plain",
                "p50 gated / fused",
            ],
            rows,
        )
    )

    direct = s["large model asked directly (baseline)"]
    print("\nConfidence escalation against asking the large model directly (same run):")
    rows = []
    for name, r in s.items():
        if r["group"] != "confidence":
            continue
        rows.append(
            [
                name,
                fmt(r["calls_per_request"], 2),
                fmt(r["tokens_per_request"], 0),
                fmt(r["wall_ms"]["p50"]),
                fmt(r["wall_ms"]["p50"] / direct["wall_ms"]["p50"], 2),
                fmt(r["wall_ms"]["p99"]),
                fmt(r["wall_ms"]["p99"] / direct["wall_ms"]["p99"], 2),
            ]
        )
    print(table(["scenario", "calls/req", "tokens/req", "wall p50", "÷ direct", "wall p99", "÷ direct"], rows))

    everyone = s["Fusion waits for everyone (baseline)"]
    print("\nOne panel member 10x slower (500 ms vs 50 ms): judge after 2 of 3 against waiting for all 3 (same run):")
    rows = []
    for name, r in s.items():
        if r["group"] != "quorum":
            continue
        rows.append(
            [
                name,
                fmt(r["critical_path_ms_mean"]),
                fmt(r["wall_ms"]["p50"]),
                fmt(r["wall_ms"]["p99"]),
                fmt(r["wall_ms"]["p99"] / everyone["wall_ms"]["p99"], 2),
                fmt(r["calls_per_request"], 2),
                fmt(r["cancelled_per_request"], 2),
                fmt(r["tokens_per_request"], 0),
            ]
        )
    print(
        table(
            [
                "scenario",
                "critical path",
                "wall p50",
                "wall p99",
                "p99 ÷ everyone",
                "calls/req",
                "stragglers cancelled/req",
                "tokens/req",
            ],
            rows,
        )
    )
