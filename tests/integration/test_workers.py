"""`serve --workers 2` behind a real Envoy: both workers take streams, metrics add up, Fusion sub-calls
may land on either worker (they share the looper secret); a worker that dies is started again and
serves again."""

from __future__ import annotations

import os
import re
import signal
import time
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
        routed = sum(
            float(m)
            for m in re.findall(r'fusion_router_requests_total\{[^}]*entry="auto"[^}]*response_path="routed"[^}]*\} (\S+)', text)
        )
        assert routed == 40  # summed over both workers, whichever one answered the scrape
        # Envoy spread the streams over both workers' ports (LEAST_REQUEST over the router cluster).
        with urllib.request.urlopen(f"http://127.0.0.1:{stack.envoy_admin_port}/clusters", timeout=5) as r:
            clusters = r.read().decode()
        served = [int(n) for n in re.findall(r"fusion_router::127\.0\.0\.1:\d+::rq_total::(\d+)", clusters)]
        assert len(served) == 2 and all(n > 0 for n in served), served
    finally:
        stack.stop()


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found |= {int(p) for p in text}
    return found


def host_requests(stack, port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.envoy_admin_port}/clusters", timeout=5) as r:
        clusters = r.read().decode()
    found = re.findall(rf"fusion_router::127\.0\.0\.1:{port}::rq_total::(\d+)", clusters)
    return int(found[0]) if found else 0


def test_a_killed_worker_is_restarted_and_serves_again(tmp_path):
    cfg = yaml.safe_load((Path(__file__).parent / "fusion.yaml").read_text())
    stack = start_stack(tmp_path, cfg, {"b-judge": {"mode": "judge_json"}}, workers=2)
    try:
        parent = stack.procs["router"].pid
        (worker,) = children(parent)  # worker 1 serves grpc_port + 1
        port = stack.grpc_port + 1
        os.kill(worker, signal.SIGKILL)  # what the OOM killer does
        deadline = time.monotonic() + 60
        while True:
            now = children(parent)
            if now and now != {worker}:
                break
            assert time.monotonic() < deadline, "the worker was not restarted"
            time.sleep(0.1)
        (restarted,) = now
        assert restarted != worker
        assert metric_total(stack, "fusion_router_worker_restarts_total") == 1
        log = stack.log("router")
        assert f'"pid":{worker}' in log.replace(" ", "") and "worker_died" in log and "worker_restarted" in log
        # The new worker takes streams again: Envoy's health check finds it, and requests land on its port
        # and succeed. Bounded: at most 200 requests.
        c = client(stack)
        before = host_requests(stack, port)
        for i in range(200):
            resp = c.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": f"hi {i}"}])
            assert resp.headers["x-vsr-response-path"] == "routed"
            if host_requests(stack, port) > before:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the restarted worker never served a request")
        assert children(parent) == {restarted}
    finally:
        stack.stop()


def metric_total(stack, name: str) -> float:
    text = scrape(stack)
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith((name + " ", name + "{")))
