"""The one process supervisor: start child processes, wait for them, restart the ones that die, stop
them by PID — used by ``serve --workers``, ``fusion-router up`` / the test harness (``router.local``),
llama-server management and the benchmarks.

A child normally leads its own session (``start_new_session``), so stopping it also stops whatever it
started (a server that forks workers), and nothing outside that session is ever signalled: processes
are found by PID and session id, never by name.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

import structlog

log = structlog.get_logger("router.processes")


def spawn(
    cmd: Sequence[str], *, env: Mapping[str, str] | None = None, log_path: Path | None = None, new_session: bool = True
) -> subprocess.Popen[bytes]:
    """Start ``cmd``; its output goes to ``log_path`` (appended) or to this process's terminal."""
    out: IO[bytes] | None = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115 - lives with the child
    try:
        return subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            env=dict(env) if env is not None else None,
            start_new_session=new_session,
        )
    finally:
        if out is not None:
            out.close()  # the child holds its own copy of the descriptor


def session_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[3])  # field 6: session id
    except (OSError, ValueError, IndexError):
        return None


def children_of(pid: int) -> list[int]:
    """Every descendant of ``pid``, from one pass over /proc (parent ids), nearest first."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    frontier = [pid]
    while frontier:
        for kid in kids.get(frontier.pop(), []):
            out.append(kid)
            frontier.append(kid)
    return out


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM (a graceful drain), SIGKILL after ``grace`` seconds; then, when ``proc`` leads its own
    session, the descendants still in that session, the same way — each by PID."""
    members = [p for p in children_of(proc.pid) if session_of(p) == proc.pid] if proc.poll() is None else []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in members if session_of(p) == proc.pid]
        for pid in alive:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if session_of(p) == proc.pid]
            time.sleep(0.05)


def stop_all(procs: Sequence[subprocess.Popen[bytes]], grace: float, *, signalled: bool = False) -> None:
    """Stop several children within one shared ``grace``; ``signalled``: they already got SIGTERM (a
    second one would cut their drain short), only wait for them and kill what is left."""
    deadline = time.monotonic() + grace
    for p in procs:
        if not signalled and p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def wait_until(what: str, check: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``check`` until true; fail naming ``what`` when ``proc`` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not become ready within {timeout:g}s")


def describe_exit(label: str, proc: subprocess.Popen[bytes], where: str) -> str:
    """Which process died, how, and where its output went."""
    code = proc.returncode
    if code is None:
        how = "is still running"
    elif code < 0:
        sig = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        hint = " (sent by the kernel's out-of-memory killer, among others: check `dmesg`)" if -code == signal.SIGKILL else ""
        how = f"was killed by signal {-code} {sig}{hint}"
    else:
        how = f"exited with code {code}"
    return f"{label} (pid {proc.pid}) {how}; {where}"


class Restarter:
    """Keeps ``count`` children alive: one that dies is started again after ``backoff_min`` seconds,
    doubled for each death within ``stable_s`` of its start (up to ``backoff_max``), so a child that
    cannot start does not spin. ``start(i)`` makes child i; the hooks see deaths and restarts."""

    def __init__(
        self,
        count: int,
        start: Callable[[int], subprocess.Popen[bytes]],
        *,
        on_death: Callable[[int, subprocess.Popen[bytes], float], None] | None = None,
        on_restart: Callable[[int, subprocess.Popen[bytes]], None] | None = None,
        backoff_min: float = 0.5,
        backoff_max: float = 30.0,
        stable_s: float = 60.0,
        poll_s: float = 0.2,
    ):
        self.count, self._start = count, start
        self.on_death, self.on_restart = on_death, on_restart
        self.backoff_min, self.backoff_max, self.stable_s, self.poll_s = backoff_min, backoff_max, stable_s, poll_s
        self.procs: list[subprocess.Popen[bytes]] = []
        self._started: list[float] = []
        self._quick_deaths: list[int] = []

    def start(self) -> None:
        self.procs = [self._start(i) for i in range(self.count)]
        self._started = [time.monotonic()] * self.count
        self._quick_deaths = [0] * self.count

    async def supervise(self, stop: asyncio.Event) -> None:
        due: dict[int, float] = {}  # child index -> when to start it again
        while not stop.is_set():
            now = time.monotonic()
            for i, proc in enumerate(self.procs):
                if i not in due and proc.poll() is not None:
                    quick = now - self._started[i] < self.stable_s
                    self._quick_deaths[i] = self._quick_deaths[i] + 1 if quick else 0
                    delay = min(self.backoff_max, self.backoff_min * 2 ** max(0, self._quick_deaths[i] - 1))
                    due[i] = now + delay
                    if self.on_death is not None:
                        self.on_death(i, proc, delay)
            for i, when in list(due.items()):
                if now >= when and not stop.is_set():
                    del due[i]
                    self.procs[i] = self._start(i)
                    self._started[i] = time.monotonic()
                    if self.on_restart is not None:
                        self.on_restart(i, self.procs[i])
            try:
                await asyncio.wait_for(stop.wait(), self.poll_s)
            except TimeoutError:
                pass
