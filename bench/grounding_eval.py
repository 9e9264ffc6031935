#!/usr/bin/env python3
"""Plain vs grounding-aware Fusion on a factuality slice where a panel member is confidently wrong.

Items: capitals from the eval set (``router/eval/data/capitals.jsonl``), restricted to the countries the
NLI model never saw in training (``models/nli/metadata.json`` lists them), answered in wording the NLI
training never used. Panel members are simulators with scripted answers — a right one, a confidently
wrong one (another country's capital, stated as fact) — and, where a real model is wanted, the judge and
synthesis are Qwen2.5-Coder-0.5B on llama-server (``make llm``); ``--sim-judge`` uses a simulated judge
instead (then accuracy only says whether the right answer reached the synthesis prompt first).

Scenarios:
* ``context``  — the request carries a tool result with the truth; panel: right, wrong (reference: context).
* ``majority_right`` — no evidence; panel: right, right (other wording), wrong (reference: panel).
* ``majority_wrong`` — no evidence; panel: right, wrong, wrong (other wording): the correct dissenter.

Configurations: ``plain`` Fusion and grounding with ``weight``, ``annotate`` and ``filter``. Per
(scenario, configuration): accuracy of the final answer with a 95 % bootstrap CI, how often a
contradicted answer reached the synthesis (``filter``: kept; ``weight``: reached, flagged), how often
the wrong answer reached it unflagged, how often a right answer was dropped, tokens and calls per
request, and the grounding stage's latency. Writes JSON (``--out``) and prints a Markdown table.

    .venv/bin/python bench/grounding_eval.py --items 15 --out docs/eval/grounding.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {"plain": None, "weight": {"policy": "weight"}, "annotate": {"policy": "annotate"}, "filter": {"policy": "filter"}}
SCENARIOS = ("context", "majority_right", "majority_wrong")
JUDGE = "qwen2.5-coder-0.5b"


def items(n: int) -> list[dict[str, Any]]:
    meta = json.loads((ROOT / "models" / "nli" / "metadata.json").read_text())
    held_out = set(meta["training"]["held_out_countries"])
    rows = [json.loads(line) for line in (ROOT / "router" / "eval" / "data" / "capitals.jsonl").read_text().splitlines() if line]
    out = []
    for r in rows:
        country = r["prompt"].split("capital city of ", 1)[1].split("?", 1)[0]
        if country in held_out:
            out.append({**r, "country": country})
    for k, r in enumerate(out):  # the wrong answer: another held-out country's capital
        r["wrong"] = out[(k + 7) % len(out)]["answer"]
    return out[:n]


def scripted(rows: list[dict[str, Any]], form: str, value: str) -> dict[str, str]:
    forms = {"a": "{v} serves as the national capital of {c}.", "b": "The government of {c} sits in {v}, its capital."}
    return {f"capital city of {r['country']}?": forms[form].format(v=r[value], c=r["country"]) for r in rows}


def build(rows: list[dict[str, Any]], sim_judge: bool, workdir: Path) -> tuple[Any, list[Any], Any]:
    import yaml

    from router.local import Stack, free_port

    sims = {
        "b-right": scripted(rows, "a", "answer"),
        "b-right2": scripted(rows, "b", "answer"),
        "b-wrong": scripted(rows, "a", "wrong"),
        "b-wrong2": scripted(rows, "b", "wrong"),
    }
    backends = [{"name": b, "endpoint": f"http://127.0.0.1:{free_port()}"} for b in sims]
    models = [{"name": b.removeprefix("b-"), "backend": b} for b in sims]
    specs = [
        {
            "name": b["name"],
            "port": int(b["endpoint"].rsplit(":", 1)[1]),
            "models": [b["name"].removeprefix("b-")],
            "answers": sims[b["name"]],
        }
        for b in backends
    ]
    servers: list[Any] = []
    if sim_judge:
        port = free_port()
        backends.append({"name": "b-judge", "endpoint": f"http://127.0.0.1:{port}"})
        models.append({"name": JUDGE, "backend": "b-judge"})
        specs.append({"name": "b-judge", "port": port, "models": [JUDGE], "mode": "judge_json"})
    else:
        from router.config import parse_config
        from router.llamacpp import load_install, specs_for, start_servers

        port = free_port()
        backends.append({"name": "llamacpp-qwen-coder", "endpoint": f"http://127.0.0.1:{port}"})
        models.append({"name": JUDGE, "backend": "llamacpp-qwen-coder", "served_model_id": "Qwen2.5-Coder-0.5B-Instruct"})
    cfg = {
        "global": {
            "router": {"auto_model_names": ["vllm-sr/auto"]},
            "classifiers": {"models_dir": str(ROOT / "models")},
            "integrations": {"looper": {"timeout_seconds": 300}},
        },
        "backends": backends,
        "models": models,
        "default_model": JUDGE,
        # A grounding decision that never matches: it makes the router load the NLI model at start-up.
        "routing": {
            "signals": {"keywords": [{"name": "never", "keywords": ["zzz-never-zzz"]}]},
            "decisions": [
                {
                    "name": "grounded",
                    "priority": 1,
                    "rules": {"type": "keyword", "name": "never"},
                    "modelRefs": [{"model": "right"}, {"model": "wrong"}],
                    "algorithm": {"type": "fusion", "fusion": {"grounding": {"enabled": True, "on_error": "fail"}}},
                }
            ],
        },
    }
    path = workdir / "router.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    if not sim_judge:
        servers_file = workdir / "servers.yaml"
        servers_file.write_text(
            yaml.safe_dump(
                {"servers": [{"backend": "llamacpp-qwen-coder", "model": JUDGE, "threads": 2, "parallel": 1, "ctx_size": 4096}]}
            )
        )
        servers = start_servers(specs_for(servers_file, parse_config(cfg)), load_install(), log_dir=workdir, timeout=300)
    stack = Stack(
        path,
        listen_port=free_port(),
        grpc_port=free_port(),
        admin_port=free_port(),
        envoy_admin_port=free_port(),
        internal_port=free_port(),
        sim_specs=specs,
        workdir=workdir,
        quiet=True,
        log_format="json",
    )
    stack.start(timeout=180)
    return stack, servers, cfg


def request(row: dict[str, Any], scenario: str, grounding: dict[str, Any] | None) -> dict[str, Any]:
    panel = {
        "context": ["right", "wrong"],
        "majority_right": ["right", "right2", "wrong"],
        "majority_wrong": ["right", "wrong", "wrong2"],
    }[scenario]
    plugin: dict[str, Any] = {
        "id": "fusion",
        "analysis_models": panel,
        "model": JUDGE,
        "max_completion_tokens": 48,
        "temperature": 0,
    }
    if grounding is not None:
        plugin["grounding"] = {"enabled": True, "on_error": "fail", **grounding}
    messages: list[dict[str, Any]] = [{"role": "user", "content": row["prompt"]}]
    if scenario == "context":
        messages += [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "atlas", "arguments": json.dumps({"country": row["country"]})},
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "c1",
                "content": f"Atlas entry. Country: {row['country']}. Capital city: {row['answer']}.",
            },
        ]
    return {"model": JUDGE, "messages": messages, "plugins": [plugin], "temperature": 0, "max_tokens": 48}


async def detection(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The grounding stage alone (no LLM): on the same scripted panels, how often it scored the right
    answer above the wrong one, and marked each contradicted — detection quality apart from synthesis."""
    from router.config.schema import ClassifierSettings
    from router.looper.encoders import RuntimeEncoders
    from router.looper.grounding import GroundingSettings, ground
    from router.signals.models import ModelRuntime

    runtime = ModelRuntime(ROOT / "models", ClassifierSettings())
    enc = RuntimeEncoders(runtime)
    answers = {
        f: {k: v for k, v in scripted(rows, f[0], f[1]).items()}
        for f in (("a", "answer"), ("b", "answer"), ("a", "wrong"), ("b", "wrong"))
    }
    out: dict[str, Any] = {}
    try:
        for scenario in SCENARIOS:
            panel = {
                "context": [("right", ("a", "answer")), ("wrong", ("a", "wrong"))],
                "majority_right": [("right", ("a", "answer")), ("right2", ("b", "answer")), ("wrong", ("a", "wrong"))],
                "majority_wrong": [("right", ("a", "answer")), ("wrong", ("a", "wrong")), ("wrong2", ("b", "wrong"))],
            }[scenario]
            stats = {"right_above_wrong": 0, "wrong_flagged": 0, "right_flagged": 0, "wrong_dropped": 0, "right_dropped": 0}
            for row in rows:
                key = f"capital city of {row['country']}?"
                msgs = request(row, scenario, None)["messages"]
                res = await ground(
                    enc, GroundingSettings(enabled=True, policy="filter"), [(m, answers[f][key]) for m, f in panel], msgs
                )
                by = {a.model: a for a in res.trace.answers}
                rights = [a for m, a in by.items() if m.startswith("right")]
                wrongs = [a for m, a in by.items() if m.startswith("wrong")]
                stats["right_above_wrong"] += min(a.score for a in rights) > max(a.score for a in wrongs)
                stats["wrong_flagged"] += any(a.contradicted_claims for a in wrongs)
                stats["right_flagged"] += any(a.contradicted_claims for a in rights)
                stats["wrong_dropped"] += any(a.action == "dropped" for a in wrongs)
                stats["right_dropped"] += any(a.action == "dropped" for a in rights)
            out[scenario] = {k: v / len(rows) for k, v in stats.items()} | {"n": len(rows)}
    finally:
        await runtime.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=15)
    ap.add_argument("--sim-judge", action="store_true", help="simulated judge/synthesis (no llama-server)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--configs", nargs="*", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--scenarios", nargs="*", choices=list(SCENARIOS), default=list(SCENARIOS))
    ap.add_argument(
        "--detection-only", action="store_true", help="the grounding stage alone on every held-out item (no stack, no LLM)"
    )
    args = ap.parse_args()

    import openai

    from router.eval.stats import mean_ci
    from router.llamacpp import stop_servers

    # A stop signal still stops the stack and llama-server this started (finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.detection_only:
        import asyncio

        det = asyncio.run(detection(items(10_000)))
        print(
            "| scenario | n | right scored above wrong | wrong answer flagged | right answer flagged | filter drops wrong "
            "| filter drops right |\n| --- | --- | --- | --- | --- | --- | --- |"
        )
        for sc, r in det.items():
            print(
                f"| {sc} | {r['n']} | {r['right_above_wrong']:.0%} | {r['wrong_flagged']:.0%} | {r['right_flagged']:.0%} | "
                f"{r['wrong_dropped']:.0%} | {r['right_dropped']:.0%} |"
            )
        if args.out:
            args.out.write_text(json.dumps({"detection": det}, indent=2) + "\n")
        return 0
    rows = items(args.items)
    workdir = Path(tempfile.mkdtemp(prefix="grounding-eval-"))
    stack, servers, _ = build(rows, args.sim_judge, workdir)
    results: dict[str, dict[str, Any]] = {}
    try:
        client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0, timeout=600)
        for scenario in args.scenarios:
            for name in args.configs:
                grounding = CONFIGS[name]
                recs = []
                for row in rows:
                    t0 = time.perf_counter()
                    body = request(row, scenario, grounding)
                    resp = client.chat.completions.with_raw_response.create(
                        model=body["model"],
                        messages=body["messages"],
                        temperature=0,
                        max_tokens=48,
                        extra_body={"plugins": body["plugins"]},
                    )
                    doc = json.loads(resp.http_response.text)
                    reply = doc["choices"][0]["message"]["content"] or ""
                    trace = doc.get("fusion") or {}
                    g = trace.get("grounding") or {}
                    answers = {a["model"]: a for a in g.get("answers", [])}
                    contradicted = [m for m, a in answers.items() if a["contradicted_claims"]]
                    reached = (
                        [m for m, a in answers.items() if a["action"] != "dropped"]
                        if g.get("status") == "applied"
                        else list(trace.get("analysis_models") or [])
                    )
                    wrong_members = [
                        m for m in ("wrong", "wrong2") if m in request(row, scenario, None)["plugins"][0]["analysis_models"]
                    ]
                    recs.append(
                        {
                            "correct": row["answer"].lower() in reply.lower()
                            or any(a.lower() in reply.lower() for a in row["aliases"]),
                            "contradicted_reached": any(m in reached for m in contradicted),
                            "wrong_unflagged": any(m in reached and m not in contradicted for m in wrong_members)
                            if g.get("status") == "applied"
                            else True,
                            "wrong_flagged": any(m in contradicted for m in wrong_members),
                            "right_flagged": any(m in contradicted for m in ("right", "right2")),
                            "right_dropped": any(answers.get(m, {}).get("action") == "dropped" for m in ("right", "right2")),
                            "tokens": doc["usage"]["total_tokens"],
                            "calls": trace.get("iterations"),
                            "grounding_ms": (trace.get("latency_ms") or {}).get("grounding", 0.0),
                            "seconds": time.perf_counter() - t0,
                            "status": g.get("status", "off"),
                        }
                    )
                ci = mean_ci([float(r["correct"]) for r in recs])
                acc = {"mean": ci.mean, "low": ci.low, "high": ci.high}
                key = f"{scenario}/{name}"
                results[key] = {
                    "n": len(recs),
                    "accuracy": acc,
                    "status": sorted({r["status"] for r in recs}),
                    **{
                        k: sum(bool(r[k]) for r in recs) / len(recs)
                        for k in ("contradicted_reached", "wrong_unflagged", "wrong_flagged", "right_flagged", "right_dropped")
                    },
                    "tokens": sum(r["tokens"] for r in recs) / len(recs),
                    "calls": sum(r["calls"] or 0 for r in recs) / len(recs),
                    "grounding_ms": sum(r["grounding_ms"] for r in recs) / len(recs),
                    "correct": [bool(r["correct"]) for r in recs],  # per item, in item order: for paired comparisons
                }
                print(key, json.dumps(results[key]), flush=True)
    finally:
        stack.stop()
        stop_servers(servers)
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        "\n| scenario | configuration | accuracy (95% CI) | wrong answer flagged | right answer flagged | contradicted reached synthesis "
        "| wrong reached unflagged | right dropped | tokens/request | grounding ms |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for key, r in results.items():
        s, c = key.split("/")
        a = r["accuracy"]
        print(
            f"| {s} | {c} | {a['mean']:.2f} ({a['low']:.2f}–{a['high']:.2f}) | {r['wrong_flagged']:.0%} | {r['right_flagged']:.0%} | "
            f"{r['contradicted_reached']:.0%} | {r['wrong_unflagged']:.0%} | {r['right_dropped']:.0%} | {r['tokens']:.0f} | "
            f"{r['grounding_ms']:.0f} |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"items": len(rows), "judge": "simulated" if args.sim_judge else JUDGE, "results": results}, indent=2)
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
