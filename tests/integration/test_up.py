"""`fusion-router up` says which process died, how, and where its log is, instead of silently tearing
everything down (the real CLI, a real Envoy, the router and the simulated backends)."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from router.local import Stack, free_port
from tests.integration.harness import raw, with_sim_ports

pytestmark = pytest.mark.envoy


def _lines(stream, out: queue.Queue) -> None:
    for line in stream:
        out.put(line)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_up_reports_a_killed_router_and_stops_the_rest(tmp_path):
    cfg, _ = with_sim_ports(yaml.safe_load((Path(__file__).parent / "fusion.yaml").read_text()), {})
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    logs = tmp_path / "logs"
    port = free_port()
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "router.cli",
            "up",
            "--simulate",
            "--config",
            str(config),
            "--port",
            str(port),
            "--grpc-port",
            str(free_port()),
            "--admin-port",
            str(free_port()),
            "--envoy-admin-port",
            str(free_port()),
            "--internal-port",
            str(free_port()),
            "--log-dir",
            str(logs),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_lines, args=(up.stdout, lines), daemon=True)
    reader.start()
    try:
        banner = ""
        deadline = time.monotonic() + 90
        while "Press Ctrl-C" not in banner:
            assert up.poll() is None, f"up exited with {up.returncode}: {up.stderr.read() if up.stderr else ''}"
            assert time.monotonic() < deadline, banner
            try:
                banner += lines.get(timeout=1)
            except queue.Empty:
                pass
        pids = {name: int(pid) for name, pid in re.findall(r"(\w+) pid (\d+)", banner)}
        assert set(pids) == {"sim", "router", "envoy"}, banner
        assert f"Logs            : {logs}" in banner
        assert raw(f"http://127.0.0.1:{port}", "GET", "/v1/models")[0] == 200

        os.kill(pids["router"], signal.SIGKILL)  # what the kernel's OOM killer does
        assert up.wait(60) == 1
        err = up.stderr.read() if up.stderr else ""
        assert f"fusion-router up: the router (pid {pids['router']}) was killed by signal 9 SIGKILL" in err, err
        assert f"its log is {logs / 'router.log'}" in err
        assert (logs / "router.log").exists()
        reader.join(10)  # stdout closed when up exited
        out = "".join(lines.get_nowait() for _ in range(lines.qsize()))
        assert "fusion-router: stopped (sim, envoy)" in out, out
        assert not _alive(pids["envoy"]) and not _alive(pids["sim"])
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            up.wait(30)


def test_exit_report_wording(tmp_path):
    quiet = Stack(tmp_path / "c.yaml", workdir=tmp_path, quiet=True)
    loud = Stack(tmp_path / "c.yaml", workdir=tmp_path)
    for stack in (quiet, loud):
        stack.procs["router"] = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
        stack.procs["envoy"] = subprocess.Popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"])
        for p in stack.procs.values():
            p.wait(30)
        assert stack.dead() == ["router", "envoy"]
    assert quiet.exit_report("router") == (
        f"the router (pid {quiet.procs['router'].pid}) exited with code 3; its log is {tmp_path / 'router.log'}"
    )
    assert (
        loud.exit_report("envoy") == f"Envoy (pid {loud.procs['envoy'].pid}) was killed by signal 15 SIGTERM; its output is above"
    )
