"""The eval harness through the real stack (Envoy + router + simulated backends): solo models, a Fusion
plugin and self-fusion are costed from the router's own trace, a failing model and a judge that does
not answer JSON are recorded per item, and the report and chart come out."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.eval.chart import draw
from router.eval.configs import EvalConfiguration, EvalSuite, JudgeSpec, configurations_from_flags
from router.eval.dataset import Criterion, Item
from router.eval.report import build_report
from router.eval.results import ResultStore, current
from router.eval.runner import Runner
from tests.integration.harness import start_stack

pytestmark = pytest.mark.envoy

CONFIG = {
    "global": {
        "router": {"auto_model_names": ["vllm-sr/auto"]},
        "integrations": {
            "looper": {
                "endpoint": "http://127.0.0.1:8802/v1/chat/completions",
                "timeout_seconds": 30,
                "fusion": {"model_names": ["vllm-sr/fusion"]},
            }
        },
    },
    "backends": [{"name": n, "endpoint": "http://127.0.0.1:1"} for n in ("b-a", "b-b", "b-judge", "b-fail")],
    "models": [
        {"name": "m-a", "backend": "b-a"},
        {"name": "m-b", "backend": "b-b"},
        {"name": "m-judge", "backend": "b-judge"},
        {"name": "m-fail", "backend": "b-fail"},
    ],
    "default_model": "m-a",
    "routing": {"decisions": [{"name": "general", "priority": 0, "modelRefs": [{"model": "m-a"}]}]},
}
SIMS = {"b-judge": {"mode": "judge_json", "max_tokens": 40}, "b-fail": {"mode": "error", "fail_status": 503}}
# The simulators echo the prompt, so "contains" items whose answer is in the prompt are right and
# the arithmetic item is wrong: the expected scores are known in advance.
ITEMS = [
    Item(id="echo-1", slice="echo", prompt="Say the word banana.", scorer="contains", answer="banana"),
    Item(id="echo-2", slice="echo", prompt="Say the word cherry.", scorer="contains", answer="cherry"),
    Item(id="sum", slice="math", prompt="What is 2 + 2? Reply with the number.", scorer="number", answer="4"),
    Item(
        id="open",
        slice="open",
        prompt="Is the Moon made of cheese?",
        scorer="rubric",
        rubric=[Criterion(id="p1", text="says no", weight=1), Criterion(id="n1", text="says yes", weight=-1)],
    ),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("eval"), CONFIG, SIMS)
    yield s
    s.stop()


async def test_eval_through_envoy_and_the_router(stack, tmp_path: Path) -> None:
    configs = configurations_from_flags(solo=["m-a", "m-b"], fusion=["m-a+m-b@m-judge"], self_fusion=["m-a@m-judge"], model=[])
    configs.append(EvalConfiguration(name="down", model="m-fail"))
    # the sim judge answers a rubric prompt with an echo, not a verdict: unscored, never zero
    suite = EvalSuite(
        endpoint=f"{stack.url}/v1",
        concurrency=2,
        max_tokens=32,
        timeout_seconds=60,
        judge=JudgeSpec(model="m-judge", structured=False),
        configurations=configs,
    )
    store = ResultStore(tmp_path / "results.jsonl")
    outcome = await Runner(suite, ITEMS, store, progress=False).run()
    assert outcome.finished == 20 and not outcome.interrupted
    records = current(store.load(), {c.name: c.fingerprint(suite) for c in configs})

    solo = records[("m-a", "echo-1")]
    assert (solo.status, solo.score, solo.calls, solo.trace_key) == ("scored", 1.0, 1, None)
    assert solo.headers.get("x-vsr-selected-model") == "m-a" and solo.prompt_tokens > 0
    assert records[("m-a", "sum")].score == 0.0

    for name in ("fusion(m-a+m-b@m-judge)", "self-fusion(m-a@m-judge)"):
        fused = records[(name, "echo-1")]
        # panel of two + judge + synthesis, read from the router's `fusion` trace
        assert (fused.status, fused.calls, fused.trace_key) == ("scored", 4, "fusion"), fused
        assert {"panel", "synthesis"} <= set(fused.stage_usage)
        assert fused.prompt_tokens > solo.prompt_tokens

    assert all(
        records[("down", i.id)].status == "error" and (records[("down", i.id)].error or "").startswith("HTTP 5") for i in ITEMS
    )
    judged = records[("m-a", "open")]
    assert judged.status == "unscored" and judged.judge is not None and judged.judge.error is not None

    report = build_report(suite, ITEMS, records, resamples=300)
    assert report.complete and report.baseline in ("m-a", "m-b")
    by = {s.name: s for s in report.configurations}
    assert by["fusion(m-a+m-b@m-judge)"].calls == 4 and by["m-a"].calls == 1
    assert by["down"].errors == 4 and by["m-a"].unscored == 1
    assert draw(report, tmp_path / "chart.png") is not None
