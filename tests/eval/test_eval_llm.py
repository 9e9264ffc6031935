"""A small eval on the local real models (llama-server built by `make llm`), the way `make eval` runs it:
llama.cpp servers + router + Envoy on free ports, two solo models and Fusion of both, four items.

What it proves is the machinery on real models - every answer arrives, Fusion's calls and tokens are
read from the router's trace, the judge's verdict is parsed (the grammar-constrained JSON), the report
and chart come out, a rerun reuses everything - not how good tiny models are."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from router.eval.local_stack import main as eval_local
from router.llamacpp import LlamaCppError, load_install

pytestmark = pytest.mark.envoy


def _require_models() -> None:
    try:
        load_install()
    except LlamaCppError as exc:
        # `make test` builds the models first and sets FUSION_ROUTER_REQUIRE_LLM=1: a failure there.
        if os.environ.get("FUSION_ROUTER_REQUIRE_LLM") == "1":
            pytest.fail(str(exc))
        pytest.skip(f"local models not installed: {exc}")


ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "router" / "eval" / "data"
SUITE = """
concurrency: 2
max_tokens: 48
timeout_seconds: 600
judge: {model: qwen2.5-coder-0.5b, max_tokens: 64}
configurations:
  - {name: smollm2, model: smollm2-135m, solo: true}
  - {name: qwen, model: qwen2.5-coder-0.5b, solo: true}
  - name: fusion
    model: smollm2-135m
    extra_body: {plugins: [{id: fusion, analysis_models: [smollm2-135m, qwen2.5-coder-0.5b],
                            model: qwen2.5-coder-0.5b, max_completion_tokens: 48}]}
"""


def test_small_eval_on_local_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _require_models()
    items = []
    for name in ("arithmetic", "capitals", "mmlu", "open"):
        items.append((DATA / f"{name}.jsonl").read_text().splitlines()[0])
    data = tmp_path / "items.jsonl"
    data.write_text("\n".join(items) + "\n")
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    args = ["--suite", str(suite), "--data", str(data), "--out", str(out), "--no-progress", "--bootstrap", "500"]

    assert eval_local(args) == 0
    records = {(r["configuration"], r["item_id"]): r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert len(records) == 12
    assert all(r["status"] != "error" for r in records.values()), [r["error"] for r in records.values()]
    for (config, _), r in records.items():
        assert r["prompt_tokens"] > 0 and r["completion_tokens"] > 0
        if config == "fusion":
            assert (r["calls"], r["trace_key"]) == (4, "fusion")  # panel of two + judge + synthesis
            assert {"panel", "synthesis"} <= set(r["stage_usage"])
        else:
            assert r["calls"] == 1 and r["headers"]["x-vsr-selected-model"] in ("smollm2-135m", "qwen2.5-coder-0.5b")
    # the open item went to the judge; its grammar-constrained reply parses into a verdict
    judged = [r for (_, item), r in records.items() if item.startswith("open-")]
    assert all(r["grader"] == "judge" and r["judge"]["met"] is not None for r in judged), judged
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] and report["baseline"] in ("smollm2", "qwen")
    assert (out / "chart.png").read_bytes()[:4] == b"\x89PNG"

    capsys.readouterr()
    assert eval_local(args) == 0  # resumed: nothing left to ask
    assert "0 answers this run, 12 reused" in capsys.readouterr().err
