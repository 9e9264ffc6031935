"""`serve --workers 2` behind a real Envoy: both workers take streams, metrics add up, Fusion sub-calls
may land on either worker (they share the looper secret)."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.integration.harness import client, start_stack

pytestmark = pytest.mark.envoy


def scrape(stack) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.admin_port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def test_two_workers_share_the_load_and_the_metrics(tmp_path):
    cfg = yaml.safe_load((Path(__file__).parent / "fusion.yaml").read_text())
    stack = start_stack(tmp_path, cfg, {"b-judge": {"mode": "judge_json"}}, workers=2)
    try:
        c = client(stack)
        for _ in range(40):
            c.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hello"}])
        resp = c.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": "deliberate"}])
        assert resp.headers["x-vsr-response-path"] == "fusion"  # sub-calls authenticated on any worker
        text = scrape(stack)
        routed = sum(float(m) for m in re.findall(
            r'fusion_router_requests_total\{[^}]*entry="auto"[^}]*response_path="routed"[^}]*\} (\S+)', text))
        assert routed == 40  # summed over both workers, whichever one answered the scrape
        # Envoy spread the streams over both workers' ports (LEAST_REQUEST over the router cluster).
        with urllib.request.urlopen(f"http://127.0.0.1:{stack.envoy_admin_port}/clusters", timeout=5) as r:
            clusters = r.read().decode()
        served = [int(n) for n in re.findall(r"fusion_router::127\.0\.0\.1:\d+::rq_total::(\d+)", clusters)]
        assert len(served) == 2 and all(n > 0 for n in served), served
    finally:
        stack.stop()
