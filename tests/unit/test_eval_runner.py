"""The runner against a scripted OpenAI endpoint: scoring, failures recorded per item, resume, report, chart."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from router.eval.configs import EvalConfiguration, EvalSuite, JudgeSpec, fusion_body
from router.eval.dataset import Criterion, Item
from router.eval.report import build_report, markdown
from router.eval.results import ResultStore, current
from router.eval.runner import Runner
from tests.eval.fake_endpoint import FakeOpenAI

ITEMS = [
    Item(id="n1", slice="math", prompt="What is 2 + 2?", scorer="number", answer="4"),
    Item(id="n2", slice="math", prompt="What is 3 * 3?", scorer="number", answer="9"),
    Item(
        id="c1", slice="mc", prompt="Capital of Italy? A. Paris B. Rome", scorer="choice", answer="B", choices=["Paris", "Rome"]
    ),
    Item(
        id="o1",
        slice="open",
        prompt="Is the Moon made of cheese?",
        scorer="rubric",
        rubric=[
            Criterion(id="p1", text="says no", weight=1, pattern=r"\bno\b"),
            Criterion(id="n1", text="says yes", weight=-1, pattern=r"^\s*yes"),
        ],
    ),
]
ANSWERS = {
    "What is 2 + 2?": "The answer is 4.",
    "What is 3 * 3?": "9",
    "Capital of Italy? A. Paris B. Rome": "B",
    "Is the Moon made of cheese?": "No, it is rock.",
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = await FakeOpenAI(ANSWERS).start()
    yield server
    await server.stop()


def _suite(fake: FakeOpenAI, *configs: EvalConfiguration, judge: str | None = None) -> EvalSuite:
    return EvalSuite(
        endpoint=fake.url,
        concurrency=3,
        timeout_seconds=10,
        judge=JudgeSpec(model=judge) if judge else None,
        configurations=list(configs),
    )


ORACLE = EvalConfiguration(name="oracle", model="oracle", solo=True)
WRONG = EvalConfiguration(name="wrong", model="wrong", solo=True)
LOOPER = EvalConfiguration(name="fusion", model="looper", extra_body=fusion_body(["oracle", "wrong"], "oracle"))
FAILING = EvalConfiguration(name="down", model="fail")


async def _run(suite: EvalSuite, path: Path, items: list[Item] = ITEMS) -> dict:
    store = ResultStore(path)
    outcome = await Runner(suite, items, store, progress=False).run()
    fingerprints = {c.name: c.fingerprint(suite) for c in suite.configurations}
    return {"outcome": outcome, "records": current(store.load(), fingerprints)}


async def test_scores_costs_and_failures_per_item(fake: FakeOpenAI, tmp_path: Path) -> None:
    suite = _suite(fake, ORACLE, WRONG, LOOPER, FAILING)
    got = await _run(suite, tmp_path / "results.jsonl")
    records = got["records"]
    assert got["outcome"].finished == 16 and got["outcome"].errors == 4 and not got["outcome"].interrupted
    assert {k: r.score for k, r in records.items() if k[0] == "oracle"} == {
        ("oracle", "n1"): 1.0,
        ("oracle", "n2"): 1.0,
        ("oracle", "c1"): 1.0,
        ("oracle", "o1"): 1.0,
    }
    assert records[("oracle", "c1")].extracted == "B" and records[("oracle", "n1")].extracted == "4"
    assert all(r.score == 0.0 for k, r in records.items() if k[0] == "wrong")
    # the looper's cost comes from its trace: 4 calls, usage summed over them
    fusion = records[("fusion", "n1")]
    assert (fusion.calls, fusion.prompt_tokens, fusion.completion_tokens, fusion.trace_key) == (4, 100, 40, "fusion")
    assert set(fusion.stage_usage) == {"panel", "analysis", "synthesis"}
    assert records[("oracle", "n1")].calls == 1
    # the plugin reached the endpoint as sent
    assert all(r["plugins"] == LOOPER.extra_body["plugins"] for r in fake.asked("looper"))
    # an endpoint error is recorded for each item and the run went on
    down = [r for k, r in records.items() if k[0] == "down"]
    assert len(down) == 4 and all(r.status == "error" and r.error == "HTTP 500: backend exploded" for r in down)
    # no judge: the open item is graded by its patterns
    assert records[("oracle", "o1")].grader == "pattern" and records[("wrong", "o1")].score == 0.0


async def test_judge_grades_rubric_and_garbage_is_unscored_not_zero(fake: FakeOpenAI, tmp_path: Path) -> None:
    got = await _run(_suite(fake, ORACLE, judge="judge"), tmp_path / "a.jsonl", ITEMS[3:])
    record = got["records"][("oracle", "o1")]
    assert (record.status, record.grader, record.score) == ("scored", "judge", 1.0)
    assert record.judge is not None and record.judge.met == {"p1": True, "n1": False}
    # the judge was asked with a JSON-schema response_format naming every criterion
    schema = fake.asked("judge")[0]["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["p1", "n1"]

    got = await _run(_suite(fake, ORACLE, judge="garbage-judge"), tmp_path / "b.jsonl", ITEMS[3:])
    record = got["records"][("oracle", "o1")]
    assert (record.status, record.score) == ("unscored", None)
    assert record.error == "judge reply has no JSON object" and record.pattern_score == 1.0
    report = build_report(_suite(fake, ORACLE, judge="garbage-judge"), ITEMS[3:], got["records"], resamples=200)
    assert report.configurations[0].quality is None and report.configurations[0].unscored == 1

    got = await _run(_suite(fake, ORACLE, judge="fail"), tmp_path / "c.jsonl", ITEMS[3:])
    assert got["records"][("oracle", "o1")].error == "judge call failed: HTTP 500: backend exploded"


async def test_resume_skips_finished_pairs_and_retries_errors(fake: FakeOpenAI, tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    suite = _suite(fake, ORACLE, FAILING)
    await _run(suite, path)
    assert len(fake.requests) == 8
    fake.requests.clear()
    got = await _run(suite, path)
    # finished pairs were not asked again; the four failed ones were
    assert got["outcome"].reused == 4 and got["outcome"].finished == 4
    assert [r["model"] for r in fake.requests] == ["fail"] * 4
    # a changed configuration (same name, different request) is run again; the other is not
    fake.requests.clear()
    changed = ORACLE.model_copy(update={"extra_body": {"top_p": 0.5}})
    got = await _run(_suite(fake, changed, FAILING), path)
    assert sorted(r["model"] for r in fake.requests) == ["fail"] * 4 + ["oracle"] * 4
    # a line cut short by a hard kill is skipped with a warning, not fatal
    with path.open("a") as f:
        f.write('{"configuration": "oracle", "item_')
    store = ResultStore(path)
    store.load()
    assert store.warnings and "unreadable result line skipped" in store.warnings[0]


async def test_interrupt_keeps_finished_records(tmp_path: Path) -> None:
    import asyncio

    fake = await FakeOpenAI(ANSWERS, slow_seconds=30).start()
    try:
        path = tmp_path / "results.jsonl"
        suite = EvalSuite(endpoint=fake.url, concurrency=8, configurations=[ORACLE, EvalConfiguration(name="slow", model="slow")])
        store = ResultStore(path)
        task = asyncio.create_task(Runner(suite, ITEMS, store, progress=False).run())
        # the oracle's four answers land; the slow ones are in flight when the run is cancelled
        for _ in range(500):
            if path.exists() and len(path.read_text().splitlines()) >= 4:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        outcome = await task
        assert outcome.interrupted and outcome.finished == 4
        lines = path.read_text().splitlines()
        assert len(lines) == 4 and all(json.loads(line)["configuration"] == "oracle" for line in lines)
    finally:
        await fake.stop()


async def test_report_compares_with_best_solo_and_draws_chart(fake: FakeOpenAI, tmp_path: Path) -> None:
    suite = _suite(fake, WRONG, ORACLE, LOOPER, FAILING)
    got = await _run(suite, tmp_path / "results.jsonl")
    report = build_report(suite, ITEMS, got["records"], resamples=500, seed=1)
    assert report.baseline == "oracle" and report.complete
    by = {s.name: s for s in report.configurations}
    assert by["oracle"].quality is not None and by["oracle"].quality.mean == 1.0
    assert by["wrong"].vs_baseline is not None and by["wrong"].vs_baseline.mean == -1.0
    assert by["wrong"].vs_baseline.low == by["wrong"].vs_baseline.high == -1.0  # every pair differs by exactly 1
    assert by["fusion"].calls == 4 and by["fusion"].prompt_tokens == 100
    assert by["down"].errors == 4 and by["down"].quality is not None and by["down"].quality.mean == 0.0
    assert by["down"].problems == {"error: HTTP 500": 4} and by["down"].latency_p50_ms is None
    assert by["oracle"].slices["math"].mean == 1.0
    text = markdown(report)
    assert "| oracle (solo) | 100.0 [100.0, 100.0] (n=4) | baseline |" in text
    assert "| wrong (solo) | 0.0 [0.0, 0.0] (n=4) | -100.0 [-100.0, -100.0] (n=4) |" in text
    from router.eval.chart import draw

    png = draw(report, tmp_path / "chart.png")
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_rescore_applies_todays_scorers_to_stored_answers(fake: FakeOpenAI, tmp_path: Path) -> None:
    from router.eval.command import rescore

    path = tmp_path / "results.jsonl"
    suite = _suite(fake, ORACLE)
    await _run(suite, path)
    store = ResultStore(path)
    records = store.load()
    # pretend an older scorer got these wrong
    store.rewrite(r.model_copy(update={"score": 0.0, "extracted": None}) for r in records.values())
    assert rescore(ResultStore(path), ITEMS) == 4  # three closed items and the pattern-graded open one
    again = ResultStore(path).load()
    assert {k: r.score for k, r in again.items()} == {k: r.score for k, r in records.items()}
    assert len(path.read_text().splitlines()) == 4  # one line per pair after a rewrite
