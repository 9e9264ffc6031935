"""Memory per request is bounded whatever the prompt length: a body just under the 16 MiB limit goes
through the real Envoy into the router, every guard scans it (head and tail within its token budget),
and the router's resident memory grows by less than 300 MB (read from /proc, not estimated)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests.integration.harness import raw, sim_requests, start_stack

pytestmark = pytest.mark.envoy

LIMIT_MB = 300


def rss_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


@pytest.fixture(scope="module")
def stack(tmp_path_factory, default_config):
    cfg = copy.deepcopy(default_config)
    # Time is not what this test measures: a loaded 2-core box may take a while to scan 16k tokens.
    cfg["global"]["classifiers"] = {"request_deadline_ms": 300_000}
    for section in ("jailbreak", "pii"):
        for sig in cfg["routing"]["signals"][section]:
            sig["over_budget"] = "head_tail"  # scan the head and tail instead of refusing: the heavier path
            sig["timeout_ms"] = 60_000
    s = start_stack(tmp_path_factory.mktemp("memory"), cfg)
    yield s
    s.stop()


def test_a_16_mib_prompt_adds_less_than_300_mb_to_the_router(stack):
    pid = stack.procs["router"].pid
    filler = "The committee reviewed the quarterly figures and agreed to meet again next week. "
    text = filler * ((16 * 1024 * 1024 - 4096) // len(filler))
    body = json.dumps({"model": "vllm-sr/auto", "messages": [{"role": "user", "content": text}]}).encode()
    assert 15 * 1024 * 1024 < len(body) < 16 * 1024 * 1024
    warm = json.dumps({"model": "vllm-sr/auto", "messages": [{"role": "user", "content": "hello there"}]}).encode()
    assert raw(stack.url, "POST", "/v1/chat/completions", warm)[0] == 200
    before = rss_kb(pid)
    for _ in range(2):  # twice: the second must not stack on the first
        status, _, data = raw(stack.url, "POST", "/v1/chat/completions", body)
        assert status == 200, data[:300]
    after = rss_kb(pid)
    added_mb = (after["VmHWM"] - before["VmRSS"]) / 1024
    print(f"router peak RSS grew {added_mb:.0f} MB for a {len(body) // 2**20} MiB prompt")
    assert added_mb < LIMIT_MB, f"peak RSS grew {added_mb:.0f} MB (before {before}, after {after})"
    assert stack.procs["router"].poll() is None
    # It was routed, whole, to the long-context model.
    assert any(len(json.dumps(r["body"])) > 15 * 1024 * 1024 for r in sim_requests(stack, "vllm-large"))
