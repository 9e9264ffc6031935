#!/usr/bin/env python3
"""The NLI model and the grounding stage, in this process (no Envoy): `make bench-classifiers` runs the
``pairs`` phase, `make bench-fusion` the ``grounding`` phase.

* ``pairs``: premise/hypothesis pairs per second through ``models/nli`` — one pair per call, then
  batches of 4 / 16 / 32 (the micro-batcher's default batch), CPU (and CUDA when onnxruntime-gpu sees a
  GPU); short pairs (a claim against a sentence) and long ones (a claim against a 200-token document).
* ``grounding``: the time Fusion's grounding stage adds per panel size (2-5 answers of 4 sentences),
  reference ``panel`` (every claim against every other answer) and ``context`` (every claim against the
  3 closest chunks of a tool result), through the classifier runtime and its micro-batcher, as a
  request would run it. Median of ``--reps`` runs.

    python bench/nli_bench.py [--phases pairs grounding] [--reps 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHORT = ("The capital of Australia is Canberra.", "Sydney is the capital of Australia.")
DOC = ("The city council met on Tuesday to review the budget for the coming year. " * 12).strip()
ANSWER = (
    "The Eiffel Tower was completed in 1889 for the World's Fair. It is about 330 metres tall. "
    "It stands on the Champ de Mars in Paris. Millions of people visit it every year."
)


def pairs_phase(reps: int) -> dict[str, Any]:
    from classifiers import cuda_available, load_model

    out: dict[str, Any] = {}
    devices = ["cpu"] + (["cuda"] if cuda_available() else [])
    for device in devices:
        model = load_model(ROOT / "models" / "nli", device=device)
        model.run([SHORT])
        res: dict[str, Any] = {"provider": model.provider}
        for label, pair in (("short", SHORT), ("long", (DOC, SHORT[1]))):
            for batch in (1, 4, 16, 32):
                items = [pair] * batch
                times = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    model.run(items)
                    times.append(time.perf_counter() - t0)
                med = statistics.median(times)
                res[f"{label}_b{batch}"] = {"ms_per_call": round(med * 1000, 2), "pairs_per_s": round(batch / med, 1)}
        out[device] = res
    if "cuda" not in out:
        out["cuda"] = "not measured: no GPU visible to onnxruntime on this machine"
    return out


async def grounding_phase(reps: int) -> dict[str, Any]:
    from router.config.schema import ClassifierSettings
    from router.looper.encoders import RuntimeEncoders
    from router.looper.grounding import GroundingSettings, ground
    from router.signals.models import ModelRuntime

    runtime = ModelRuntime(ROOT / "models", ClassifierSettings())
    await runtime.batcher("nli")
    await runtime.batcher("embedding")
    enc = RuntimeEncoders(runtime)
    out: dict[str, Any] = {}
    try:
        for reference in ("panel", "context"):
            g = GroundingSettings(enabled=True, reference=reference)  # type: ignore[arg-type]
            msgs: list[dict[str, Any]] = [{"role": "user", "content": "Tell me about the Eiffel Tower."}]
            if reference == "context":
                msgs.append({"role": "tool", "tool_call_id": "c", "content": (ANSWER + " ") * 3 + DOC})
            for n in (2, 3, 4, 5):
                answers = [(f"m{i}", ANSWER) for i in range(n)]
                times, pairs = [], 0
                for _ in range(reps):
                    t0 = time.perf_counter()
                    res = await ground(enc, g, answers, msgs)
                    times.append(time.perf_counter() - t0)
                    pairs = res.trace.pairs
                    assert res.trace.status == "applied", res.trace.reason
                out[f"{reference}_panel{n}"] = {"ms": round(statistics.median(times) * 1000, 1), "pairs": pairs}
    finally:
        await runtime.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phases", nargs="*", default=["pairs", "grounding"], choices=["pairs", "grounding"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not (ROOT / "models" / "nli" / "model.onnx").is_file():
        print("nli_bench: models/nli is missing (make models)", file=sys.stderr)
        return 1
    result: dict[str, Any] = {}
    if "pairs" in args.phases:
        result["pairs"] = pairs_phase(args.reps)
        cpu = result["pairs"]["cpu"]
        print("\nNLI pairs (models/nli, CPU, provider", cpu["provider"] + ")")
        print("| pairs | batch 1 | batch 4 | batch 16 | batch 32 |\n| --- | --- | --- | --- | --- |")
        for label in ("short", "long"):
            cells = [
                f"{cpu[f'{label}_b{b}']['pairs_per_s']:.0f}/s ({cpu[f'{label}_b{b}']['ms_per_call']:.0f} ms)"
                for b in (1, 4, 16, 32)
            ]
            print(f"| {label} | " + " | ".join(cells) + " |")
        if isinstance(result["pairs"]["cuda"], str):
            print("CUDA:", result["pairs"]["cuda"])
    if "grounding" in args.phases:
        result["grounding"] = asyncio.run(grounding_phase(args.reps))
        g = result["grounding"]
        print("\nGrounding stage added latency (4-sentence answers; median ms, NLI pairs)")
        print("| reference | panel 2 | panel 3 | panel 4 | panel 5 |\n| --- | --- | --- | --- | --- |")
        for ref in ("panel", "context"):
            print(
                f"| {ref} | "
                + " | ".join(f"{g[f'{ref}_panel{n}']['ms']:.0f} ms ({g[f'{ref}_panel{n}']['pairs']})" for n in (2, 3, 4, 5))
                + " |"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
