"""`fusion-router eval` as a user runs it: Ctrl-C keeps what finished, a rerun resumes, bad input is named."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from tests.eval.fake_endpoint import FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]
ITEMS = [
    {"id": f"q{n}", "slice": "math", "prompt": f"What is {n} + {n}?", "scorer": "number", "answer": str(2 * n)} for n in range(4)
]


async def _cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router.cli",
        "eval",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def _files(tmp_path: Path, url: str) -> tuple[Path, Path]:
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"endpoint: {url}\nconcurrency: 8\nconfigurations:\n"
        "  - {name: oracle, model: oracle, solo: true}\n  - {name: slow, model: slow}\n"
    )
    return data, suite


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
async def test_ctrl_c_keeps_finished_answers_and_a_rerun_resumes(tmp_path: Path, stop: signal.Signals) -> None:
    fake = await FakeOpenAI({i["prompt"]: f"It is {i['answer']}." for i in ITEMS}, slow_seconds=60).start()
    try:
        data, suite = _files(tmp_path, fake.url)
        out = tmp_path / "out"
        args = ("--suite", str(suite), "--data", str(data), "--out", str(out), "--no-progress", "--bootstrap", "200")
        proc = await _cli(*args)
        results = out / "results.jsonl"
        for _ in range(3000):  # the oracle's 4 answers land while the slow ones hang
            if results.exists() and len(results.read_text().splitlines()) >= 4:
                break
            await asyncio.sleep(0.01)
        assert len(fake.asked("slow")) == 4
        proc.send_signal(stop)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 130, err.decode()
        assert "interrupted - rerun the same command to resume" in err.decode()
        lines = [json.loads(line) for line in results.read_text().splitlines()]
        assert sorted((r["configuration"], r["item_id"]) for r in lines) == [("oracle", f"q{n}") for n in range(4)]
        assert "Incomplete run" in (out / "report.md").read_text()

        fake.slow_seconds = 0
        fake.requests.clear()
        proc = await _cli(*args)
        stdout, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert [r["model"] for r in fake.requests] == ["slow"] * 4  # finished pairs were not asked again
        assert "4 answers this run, 4 reused" in err.decode()
        report = json.loads((out / "report.json").read_text())
        assert report["complete"] and report["baseline"] == "oracle"
        assert (out / "chart.png").read_bytes()[:4] == b"\x89PNG"
        assert "| oracle (solo) | 100.0" in stdout.decode()
    finally:
        await fake.stop()


async def test_bad_dataset_line_and_missing_key_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, suite = _files(tmp_path, "http://127.0.0.1:9/v1")
    with data.open("a") as f:
        f.write('{"id": "broken", "prompt": "x"\n')
    proc = await _cli("--suite", str(suite), "--data", str(data), "--out", str(tmp_path / "o"))
    _, err = await proc.communicate()
    assert proc.returncode == 2 and f"{data}:5: not valid JSON" in err.decode()

    monkeypatch.delenv("EVAL_CLI_TEST_KEY", raising=False)
    proc = await _cli("--solo", "m", "--api-key-env", "EVAL_CLI_TEST_KEY", "--limit", "1", "--out", str(tmp_path / "o"))
    _, err = await proc.communicate()
    assert proc.returncode == 2 and "environment variable EVAL_CLI_TEST_KEY (api_key_env) is not set" in err.decode()


async def test_unreachable_endpoint_is_recorded_per_item_and_the_run_finishes(tmp_path: Path) -> None:
    from router.local import free_port

    data, _ = _files(tmp_path, "unused")
    out = tmp_path / "out"
    proc = await _cli(
        "--solo",
        "m",
        "--data",
        str(data),
        "--endpoint",
        f"http://127.0.0.1:{free_port()}/v1",
        "--out",
        str(out),
        "--no-progress",
        "--no-chart",
        "--bootstrap",
        "100",
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 4
    assert all(r["status"] == "error" and r["error"].startswith("connection failed") for r in records)
    assert "error: connection failed" in (out / "report.md").read_text()
