"""Run fuzz cases one by one through a real Envoy + router + simulated backends, and judge each.

One ``Target`` is one stack (``tests.integration.harness.start_stack`` on ``config/default.yaml``)
plus a watchdog thread that samples the router's RSS every 20 ms. The watchdog also protects the
(shared) machine: past ``rss_kill_mb`` it SIGKILLs the router it started, by PID. A case that kills or
wedges the router is recorded and the stack is started again, so one bad input does not hide the rest.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from router.local import Stack, free_port, stop_process
from tests.fuzz import hostile as T
from tests.fuzz import wire
from tests.fuzz.corpus import Case
from tests.fuzz.invariants import Violation, check_reply, error_shape_problem

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "config" / "default.yaml"
SHED = (429, 503)
NORMAL = {"model": "auto", "messages": [{"role": "user", "content": "Tell me something nice about autumn"}]}


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return 0.0


def loadavg() -> str:
    """The machine's 1/5/15-minute load: other work on a shared box changes latencies and timeouts."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def children(pid: int) -> list[int]:
    """Direct and indirect children (router workers), from /proc/<pid>/task/*/children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = [int(x) for x in f.read().split()]
                out += kids
                todo += kids
        except OSError:
            continue
    return out


def cpu_ticks(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            continue
    return total


def settle(pids: list[int], cap_s: float = 60.0, window_s: float = 0.1) -> float:
    """Wait until the router is idle (< ~10 % of a core over ``window_s``); seconds waited.

    Work a request started can outlive its answer (a classifier call past its timeout); waiting for it
    keeps each case's RSS, and the next case's guards, from being blamed on another case.
    """
    started = time.monotonic()
    hz = os.sysconf("SC_CLK_TCK")
    last = cpu_ticks(pids)
    while time.monotonic() - started < cap_s:
        time.sleep(window_s)
        now = cpu_ticks(pids)
        if (now - last) / hz < 0.1 * window_s:
            break
        last = now
    return time.monotonic() - started


class Watchdog(threading.Thread):
    """Samples the RSS of the router (and its workers); kills them past ``kill_mb``."""

    def __init__(self, pid: int, kill_mb: float, interval: float = 0.02):
        super().__init__(daemon=True, name="fuzz-rss-watchdog")
        self.pids = [pid, *children(pid)]
        self.kill_mb = kill_mb
        self.interval = interval
        self.peak_mb = 0.0
        self.killed_at_mb: float | None = None
        self._stop = threading.Event()

    def total(self) -> float:
        return sum(rss_mb(p) or 0.0 for p in self.pids)

    def reset_peak(self) -> None:
        self.peak_mb = self.total()

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            now = self.total()
            self.peak_mb = max(self.peak_mb, now)
            if now > self.kill_mb and self.killed_at_mb is None:
                self.killed_at_mb = now
                for p in reversed(self.pids):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Target:
    """One stack under test, restartable."""

    workroot: Path
    config: dict[str, Any]
    sims: dict[str, dict[str, Any]]
    body_mode: str = "FULL_DUPLEX_STREAMED"
    rss_kill_mb: float = 3072.0
    env: dict[str, str] = field(default_factory=dict)
    warmup: Callable[[Target], None] | None = None
    use_sims: bool = True  # False: the config's backends are served by the caller (see upstream.py)
    clear_fn: Callable[[], None] | None = None  # replace the sims' request log with the caller's
    received_fn: Callable[[], list[dict[str, Any]]] | None = None
    after_case_fn: Callable[[], None] | None = None  # runs before the "serves a normal request" check
    last_received: list[dict[str, Any]] = field(default_factory=list)
    stack: Stack | None = None
    watchdog: Watchdog | None = None
    baseline_mb: float = 0.0
    starts: int = 0

    def start(self) -> Target:
        from tests.integration.harness import start_stack

        self.starts += 1
        tmp = Path(tempfile.mkdtemp(prefix=f"start{self.starts}-", dir=self.workroot))
        if self.use_sims:
            self.stack = start_stack(
                tmp, copy.deepcopy(self.config), copy.deepcopy(self.sims), body_mode=self.body_mode, env=self.env
            )
        else:
            path = tmp / "router.yaml"
            path.write_text(yaml.safe_dump(self.config, sort_keys=False))
            self.stack = Stack(
                path,
                listen_port=free_port(),
                grpc_port=free_port(),
                admin_port=free_port(),
                envoy_admin_port=free_port(),
                internal_port=free_port(),
                workdir=tmp,
                quiet=True,
                log_format="json",
                body_mode=self.body_mode,
                env=self.env,
            ).start()
        (self.warmup or default_warmup)(self)
        self.watchdog = Watchdog(self.router.pid, self.rss_kill_mb)
        self.baseline_mb = self.watchdog.total()
        self.watchdog.start()
        return self

    def stop(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.stack is not None:
            self.stack.stop(grace=5.0)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def router(self) -> subprocess.Popen:
        assert self.stack is not None
        return self.stack.procs["router"]

    @property
    def port(self) -> int:
        assert self.stack is not None
        return self.stack.listen_port

    def died(self) -> str | None:
        """Why the stack is broken, or None."""
        assert self.stack is not None
        for name in ("router", "envoy", "sim"):
            proc = self.stack.procs.get(name)
            if proc is not None and proc.poll() is not None:
                return f"{name} exited with {proc.returncode}"
        return None

    @property
    def sim_urls(self) -> dict[str, str]:
        return getattr(self.stack, "sim_urls", {})

    def clear_sims(self) -> None:
        if self.clear_fn is not None:
            return self.clear_fn()
        for url in self.sim_urls.values():
            _sim_call(url, "DELETE")

    def received(self) -> list[dict[str, Any]]:
        """What the backends received since ``clear_sims``: {backend, body, headers, ...} per call."""
        if self.received_fn is not None:
            return self.received_fn()
        out = []
        for name, url in self.sim_urls.items():
            data = _sim_call(url, "GET")
            for rec in json.loads(data) if data else []:
                out.append({**rec, "backend": name})
        return out

    def normal(self, timeout: float = 30.0) -> wire.Reply:
        return wire.post_json(self.port, NORMAL, timeout=timeout)


def _sim_call(url: str, method: str) -> bytes:
    _host, port = url.removeprefix("http://").split(":")
    reply = wire.send(int(port), wire.build(method, "/_sim/requests", [], None), method=method, timeout=30)
    return reply.body if reply.status == 200 else b""


def default_warmup(target: Target) -> None:
    """Touch every classifier and path once, with a prompt about one classifier window long, so the
    baseline RSS includes what the models legitimately keep."""
    rng = __import__("random").Random(0)
    bodies = [
        NORMAL,
        {"model": "auto", "messages": [{"role": "user", "content": T.RESEARCH}]},
        {"model": "auto", "messages": [{"role": "user", "content": T.JAILBREAKS[0]}]},
        {"model": "auto", "messages": [{"role": "user", "content": "Charge my card 4111 1111 1111 1111 for the hotel"}]},
        {"model": "auto", "messages": [{"role": "user", "content": T.filler(rng, 400) + " Please email jane.doe@example.com"}]},
        {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "How do I reverse a linked list in Java?"}]},
    ]
    for body in bodies * 2:
        wire.post_json(target.port, body, timeout=60)
    target.clear_sims()


# --------------------------------------------------------------------------- the run


@dataclass
class CaseResult:
    case: Case
    status: int
    elapsed_s: float
    rss_peak_mb: float
    violations: list[Violation]
    busy_after_s: float = 0.0  # how long the router kept working after the answer
    rss_after_mb: float = 0.0
    retried: bool = False  # shed (429/503) once, asked again when the router was idle

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.case.brief(),
            "status": self.status,
            "elapsed_s": round(self.elapsed_s, 3),
            "busy_after_s": round(self.busy_after_s, 2),
            "rss_peak_mb": round(self.rss_peak_mb, 1),
            "rss_after_mb": round(self.rss_after_mb, 1),
            "retried": self.retried,
            "violations": [v.invariant for v in self.violations],
        }


@dataclass
class Report:
    seed: int
    profile: str
    body_mode: str
    started: str
    results: list[CaseResult] = field(default_factory=list)
    extra: list[Violation] = field(default_factory=list)  # stack-level checks (router down, backend down)
    restarts: int = 0
    baseline_mb: float = 0.0
    rss_growth_mb: float = 0.0
    wall_s: float = 0.0

    @property
    def violations(self) -> list[Violation]:
        return [v for r in self.results for v in r.violations] + self.extra

    def by_group(self) -> dict[tuple[str, str], list[Violation]]:
        groups: dict[tuple[str, str], list[Violation]] = defaultdict(list)
        for v in self.violations:
            groups[(v.category, v.invariant)].append(v)
        return dict(sorted(groups.items()))

    def as_dict(self) -> dict[str, Any]:
        per_cat = Counter(r.case.category for r in self.results)
        bad_cat = Counter(r.case.category for r in self.results if r.violations)
        return {
            "seed": self.seed,
            "profile": self.profile,
            "body_mode": self.body_mode,
            "started": self.started,
            "cases": len(self.results),
            "cases_with_violations": sum(1 for r in self.results if r.violations),
            "retried_after_shedding": sum(1 for r in self.results if r.retried),
            "loadavg": loadavg(),
            "violations": len(self.violations),
            "restarts": self.restarts,
            "wall_s": round(self.wall_s, 1),
            "rss": {
                "baseline_mb": round(self.baseline_mb, 1),
                "allowed_growth_mb": self.rss_growth_mb,
                "max_peak_mb": round(max((r.rss_peak_mb for r in self.results), default=0.0), 1),
            },
            "per_category": {c: {"cases": n, "failing": bad_cat.get(c, 0)} for c, n in per_cat.items()},
            "groups": [
                {
                    "category": c,
                    "invariant": i,
                    "count": len(vs),
                    "cases": [v.case_id for v in vs][:50],
                    "example": vs[0].as_dict(),
                }
                for (c, i), vs in self.by_group().items()
            ],
            "violation_list": [v.as_dict() for v in self.violations],
            "results": [r.as_dict() for r in self.results],
            "extra": [v.as_dict() for v in self.extra],
        }


def run_case(target: Target, case: Case, rss_growth_mb: float, secrets: tuple[str, ...] = ()) -> CaseResult:
    assert target.watchdog is not None
    with contextlib.suppress(Exception):  # a dead sim shows up in died() below
        target.clear_sims()
    target.watchdog.reset_peak()
    before = target.watchdog.total()
    reply = wire.send(target.port, case.request, method=case.method, timeout=case.timeout_s)
    busy_s = settle(target.watchdog.pids)
    retried = False
    if reply.status in SHED and reply.status not in case.expect and target.died() is None:
        # Shedding is the right answer to overload, and a busy shared machine can look like overload.
        # Once idle, a single request must be served: ask again, and judge that answer.
        retried = True
        reply = wire.send(target.port, case.request, method=case.method, timeout=case.timeout_s)
        busy_s += settle(target.watchdog.pids)
    peak = target.watchdog.peak_mb
    killed = target.watchdog.killed_at_mb
    died = target.died()
    received = target.received() if died is None or not died.startswith("sim") else []
    target.last_received = received
    violations = check_reply(case, reply, received, secrets=secrets)

    def bad(invariant: str, detail: str) -> None:
        violations.append(Violation(case.id, case.category, case.variant, invariant, detail, reply.status, ""))

    # Blame the case whose own work pushed RSS past the bound (an earlier case may have left it high;
    # run_cases restarts the stack when that happens, so the next case starts from the baseline again).
    if peak > target.baseline_mb + rss_growth_mb and peak - before > 32:
        bad(
            "rss_bound",
            f"router RSS peaked at {peak:.0f} MB during the case (baseline {target.baseline_mb:.0f} MB, "
            f"{before:.0f} MB before it, allowed +{rss_growth_mb:.0f} MB)"
            + (f"; SIGKILLed by the harness at {killed:.0f} MB" if killed else ""),
        )
    if died is not None:
        if died.startswith("router"):
            bad("router_alive", died + (f" (SIGKILL by the harness's RSS guard at {killed:.0f} MB)" if killed else ""))
        else:
            bad("router_alive", f"stack broken: {died}")
    else:
        if target.after_case_fn is not None:
            target.after_case_fn()
        after = target.normal()
        if after.status != 200:
            bad("serves_after", f"a normal request then got {after.status} {after.body[:120]!r} {after.error or ''}")
    return CaseResult(
        case, reply.status, reply.elapsed_s, peak, violations, busy_s, target.watchdog.total() if died is None else 0.0, retried
    )


def run_cases(
    target: Target,
    cases: Iterable[Case],
    report: Report,
    rss_growth_mb: float,
    progress: Callable[[CaseResult], None] | None = None,
    secrets: tuple[str, ...] = (),
) -> None:
    for case in cases:
        result = run_case(target, case, rss_growth_mb, secrets)
        report.results.append(result)
        if progress is not None:
            progress(result)
        broken = any(v.invariant in ("router_alive", "serves_after") for v in result.violations)
        retained = result.rss_after_mb > target.baseline_mb + rss_growth_mb
        if broken or retained:
            report.restarts += 1
            target.restart()


def down_checks(target: Target) -> list[Violation]:
    """Envoy's own answers when a backend, then the router, is gone: OpenAI-shaped 502/503, never an
    empty 500 or plain text. Leaves the stack without sims and router (stop it afterwards)."""
    assert target.stack is not None
    out: list[Violation] = []
    for what, proc_name, expect in (("backend_down", "sim", {502, 503}), ("router_down", "router", {502, 503})):
        proc = target.stack.procs.pop(proc_name, None)
        if proc is not None:
            if target.watchdog is not None and proc_name == "router":
                target.watchdog.stop()
            stop_process(proc, grace=5.0)
        reply = target.normal()
        body = reply.body[:300].decode("utf-8", "replace")
        variant = f"{proc_name} stopped, benign request"
        if reply.status not in expect:
            out.append(
                Violation(
                    what, what, variant, "status", f"got {reply.status}, expected one of {sorted(expect)}", reply.status, body
                )
            )
        if reply.status == 500:
            out.append(Violation(what, what, variant, "no_500", "HTTP 500", reply.status, body))
        if reply.status == 0:
            out.append(Violation(what, what, variant, "no_response", reply.error or "no response", 0, body))
        elif reply.status >= 300:
            problem = error_shape_problem(reply)
            if problem:
                out.append(Violation(what, what, variant, "error_shape", problem, reply.status, body))
    return out


def load_default_config() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


def default_sims(log_size: int = 5000) -> dict[str, dict[str, Any]]:
    sims: dict[str, dict[str, Any]] = {b["name"]: {"request_log_size": log_size} for b in load_default_config()["backends"]}
    sims["vllm-large"]["mode"] = "judge_json"  # the Fusion judge answers with a valid analysis
    return sims


def new_report(seed: int, profile: str, body_mode: str, rss_growth_mb: float) -> Report:
    return Report(seed, profile, body_mode, dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), rss_growth_mb=rss_growth_mb)
