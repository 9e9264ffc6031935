"""Shared pieces of the benchmarks: private ports, process clean-up, load generation, stats, tables.

Everything a bench starts is registered with a :class:`Cleanup` and stopped by PID on the way out,
whether the bench finished, failed or was interrupted (Ctrl-C / SIGTERM / SIGHUP).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` puts bench/ first, not the repo root
    sys.path.insert(0, str(ROOT))

from router.local import Stack, envoy_binary
from router.processes import children_of, http_ok, stop_process, wait_until

PORT_RANGE = (30000, 39999)
_taken: set[int] = set()


# --------------------------------------------------------------------------- ports and processes


def pick_port() -> int:
    """A free loopback port in a private range, never handed out twice in one run."""
    for _ in range(2000):
        port = random.randint(*PORT_RANGE)
        if port in _taken:
            continue
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken.add(port)
        return port
    raise RuntimeError(f"no free port in {PORT_RANGE}")


class Cleanup:
    """Stops every registered Stack / process (by PID, newest first) exactly once.

    Use as a context manager; SIGTERM and SIGHUP are turned into KeyboardInterrupt while it is active so
    the same ``finally`` path runs as for Ctrl-C.
    """

    def __init__(self) -> None:
        self._items: list[tuple[str, Any]] = []
        self._old: dict[int, Any] = {}

    def stack(self, stack: Stack) -> Stack:
        self._items.append(("stack", stack))
        return stack

    def proc(self, proc: subprocess.Popen) -> subprocess.Popen:
        self._items.append(("proc", proc))
        return proc

    def session(self, proc: subprocess.Popen) -> subprocess.Popen:
        """A process started with ``start_new_session=True`` whose children must go with it (a server
        that forks workers): stopped with :func:`stop_session`."""
        self._items.append(("session", proc))
        return proc

    def pids(self) -> list[int]:
        """PIDs of every live registered process and their children (Stack workers included)."""
        procs = [p for kind, o in self._items for p in (o.procs.values() if kind == "stack" else [o])]
        return [pid for p in procs if p.poll() is None for pid in process_tree(p.pid)]

    def forget(self, obj: Any) -> None:
        self._items = [(k, o) for k, o in self._items if o is not obj]

    def stop_all(self) -> None:
        while self._items:
            kind, obj = self._items.pop()
            try:
                if kind == "stack":
                    obj.stop()
                elif kind == "session":
                    stop_session(obj)
                else:
                    stop_proc(obj)
            except Exception as exc:
                print(f"bench: could not stop {obj!r}: {exc}", file=sys.stderr)

    def __enter__(self) -> Cleanup:
        def _raise(signum: int, _frame: Any) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old[sig] = signal.signal(sig, _raise)
        return self

    def __exit__(self, *exc: object) -> None:
        # Ignore further Ctrl-C while stopping, so a double Ctrl-C cannot leave orphans behind.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.stop_all()
        finally:
            signal.signal(signal.SIGINT, old_int)
            for sig, handler in self._old.items():
                signal.signal(sig, handler)


stop_proc = stop_process


# Stopping a session leader stops its session's members too (the one supervisor in router.processes).
stop_session = stop_process


def start_sims(cleanup: Cleanup, specs: list[dict[str, Any]], workdir: Path, timeout: float = 30.0) -> subprocess.Popen:
    """One ``python -m router.sim`` process serving every spec (each on its own port)."""
    sim_file = workdir / "bench-sim.yaml"
    sim_file.write_text(yaml.safe_dump({"backends": specs}))
    ready = workdir / "bench-sim.ready.json"
    ready.unlink(missing_ok=True)
    log = open(workdir / "bench-sim.log", "ab")  # noqa: SIM115 - lives with the process
    proc = cleanup.proc(
        subprocess.Popen(
            [sys.executable, "-m", "router.sim", "--config", str(sim_file), "--ready-file", str(ready)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
    )
    wait_until("the simulated backends", ready.exists, timeout, proc)
    return proc


def start_envoy(
    cleanup: Cleanup,
    config: dict[str, Any],
    admin_port: int,
    workdir: Path,
    name: str,
    concurrency: int = 2,
    timeout: float = 30.0,
) -> subprocess.Popen:
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    log = open(workdir / f"{name}.log", "ab")  # noqa: SIM115
    proc = cleanup.proc(
        subprocess.Popen(
            [
                envoy_binary(),
                "-c",
                str(path),
                "--base-id",
                str(random.randint(1000, 60000)),
                "--log-level",
                "warn",
                "--concurrency",
                str(concurrency),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    )
    wait_until(f"Envoy ({name})", lambda: http_ok(f"http://127.0.0.1:{admin_port}/ready"), timeout, proc)
    return proc


def workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


# --------------------------------------------------------------------------- CPU accounting


def process_tree(pid: int) -> list[int]:
    return [pid, *children_of(pid)]


def cpu_seconds(pids: Iterable[int]) -> float:
    """user+system CPU seconds of the given processes (all their threads)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / tick


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user/nice
    return (sum(fields) - idle - guest) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class CpuMeter:
    """CPU seconds per named process group over a measured interval, plus what the rest of the machine
    used meanwhile (``background``: busy CPU not spent by these groups, this process or its finished
    children such as wrk), so runs disturbed by other work on a shared box can be recognised."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]], others: Callable[[], list[int]] | None = None):
        self.groups = groups
        self.others = others
        self._start: dict[str, float] = {}
        self._pids: dict[str, list[int]] = {}
        self._t0 = 0.0

    def start(self) -> None:
        self._pids = {name: get() for name, get in self.groups.items()}
        if self.others is not None:
            self._pids["_mine_other"] = [p for p in self.others() if all(p not in v for v in self._pids.values())]
        self._start = {name: cpu_seconds(pids) for name, pids in self._pids.items()}
        self._start["_busy"], self._start["_own"] = busy_seconds(), _own_seconds()
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        out = {name: cpu_seconds(self._pids[name]) - self._start[name] for name in self._pids}
        busy = busy_seconds() - self._start["_busy"]
        own = _own_seconds() - self._start["_own"]
        mine = sum(out.values())
        out.pop("_mine_other", None)
        out["load_generator+bench"] = own
        out["background"] = max(0.0, busy - mine - own)
        out["wall"] = time.monotonic() - self._t0
        return out


def background_share(cpu: dict[str, float]) -> float:
    """Background CPU as a share of the whole machine during a measurement (0..1)."""
    wall = cpu.get("wall") or 0
    return cpu.get("background", 0.0) / (wall * (os.cpu_count() or 1)) if wall else float("nan")


def wait_quiet(limit_s: float, threshold: float = 0.15, window_s: float = 2.0) -> float:
    """Wait (at most ``limit_s``) until the machine is quieter than ``threshold`` (share of all cores)
    over ``window_s``; returns the last measured share. Other people's jobs on a shared box skew numbers."""
    deadline = time.monotonic() + limit_s
    share = float("nan")
    while True:
        b0, o0 = busy_seconds(), _own_seconds()
        time.sleep(window_s)
        share = (busy_seconds() - b0 - (_own_seconds() - o0)) / (window_s * (os.cpu_count() or 1))
        if share <= threshold or time.monotonic() >= deadline:
            return share


# --------------------------------------------------------------------------- statistics


def pct(values: Sequence[float], p: float) -> float:
    """Percentile with linear interpolation (p in 0..100)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values_ms: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values_ms),
        "mean": sum(values_ms) / len(values_ms) if values_ms else float("nan"),
        "p50": pct(values_ms, 50),
        "p90": pct(values_ms, 90),
        "p99": pct(values_ms, 99),
        "max": max(values_ms) if values_ms else float("nan"),
    }


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:.{digits}f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (it reads fine in a terminal too)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


# --------------------------------------------------------------------------- sequential latency


def sequential_latency(
    url: str,
    body: bytes,
    headers: dict[str, str],
    n: int,
    warmup: int,
    check: Callable[[http.client.HTTPResponse, bytes], None] | None = None,
) -> list[float]:
    """``n`` POSTs one after another on one keep-alive connection; per-request wall time in ms."""
    parsed = url.removeprefix("http://")
    hostport, _, path = parsed.partition("/")
    host, _, port = hostport.partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    hdrs = {"content-type": "application/json", **headers}
    out: list[float] = []
    try:
        for i in range(warmup + n):
            t0 = time.perf_counter()
            conn.request("POST", "/" + path, body, hdrs)
            resp = conn.getresponse()
            data = resp.read()
            elapsed = (time.perf_counter() - t0) * 1000
            if resp.status != 200:
                raise RuntimeError(f"{url}: HTTP {resp.status}: {data[:300]!r}")
            if check is not None and i == 0:
                check(resp, data)
            if i >= warmup:
                out.append(elapsed)
    finally:
        conn.close()
    return out


# --------------------------------------------------------------------------- load generation

_WRK_LUA = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {{"requests": %d, "duration_us": %d, "status_errors": %d, "connect": %d, ' ..
    '"read": %d, "write": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %f}}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


@dataclass
class LoadResult:
    tool: str
    concurrency: int
    duration_s: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    cpu_s: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()} | {
            "cpu_s": {k: round(v, 3) for k, v in self.cpu_s.items()}
        }


def load_tool() -> str:
    """``wrk`` when installed (C, epoll: cheap on 2 cores), else the built-in aiohttp generator.
    ``BENCH_LOAD_TOOL=aiohttp`` forces the fallback."""
    forced = os.environ.get("BENCH_LOAD_TOOL", "").strip().lower()
    if forced in ("wrk", "aiohttp"):
        return forced
    return "wrk" if shutil.which("wrk") else "aiohttp"


def run_load(
    url: str,
    body: bytes,
    headers: dict[str, str],
    concurrency: int,
    duration: float,
    meter: CpuMeter | None = None,
    workdir_: Path | None = None,
) -> LoadResult:
    """Closed-loop load: ``concurrency`` keep-alive connections for ``duration`` seconds."""
    if load_tool() == "wrk":
        return _wrk(url, body, headers, concurrency, duration, meter, workdir_ or Path(tempfile.gettempdir()))
    return _aiohttp_load(url, body, headers, concurrency, duration, meter)


def _wrk(
    url: str, body: bytes, headers: dict[str, str], concurrency: int, duration: float, meter: CpuMeter | None, wd: Path
) -> LoadResult:
    hdr_lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in {"Content-Type": "application/json", **headers}.items())
    script = wd / f"wrk-{os.getpid()}.lua"
    script.write_text(_WRK_LUA.format(body=body.decode(), headers=hdr_lines))
    # One wrk thread: it multiplexes every connection with epoll and leaves the 2 cores to the system under test.
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--timeout", "10s", "-s", str(script), url]
    if meter:
        meter.start()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    cpu = meter.stop() if meter else {}
    m = re.search(r"WRKJSON (\{.*\})", proc.stdout)
    if proc.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-500:]} {proc.stderr[-500:]}")
    d = json.loads(m.group(1))
    secs = d["duration_us"] / 1e6
    errors = d["status_errors"] + d["connect"] + d["read"] + d["write"] + d["timeout"]
    return LoadResult(
        "wrk",
        concurrency,
        secs,
        d["requests"],
        errors,
        d["requests"] / secs,
        d["p50_us"] / 1000,
        d["p90_us"] / 1000,
        d["p99_us"] / 1000,
        cpu,
    )


def _aiohttp_load(
    url: str, body: bytes, headers: dict[str, str], concurrency: int, duration: float, meter: CpuMeter | None
) -> LoadResult:
    import aiohttp

    async def main() -> tuple[list[float], int, float]:
        lat: list[float] = []
        errors = 0
        hdrs = {"content-type": "application/json", **headers}
        conn = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=conn) as session:
            started = time.perf_counter()
            end = started + duration

            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < end:
                    t0 = time.perf_counter()
                    try:
                        async with session.post(url, data=body, headers=hdrs) as resp:
                            await resp.read()
                            ok = resp.status == 200
                    except aiohttp.ClientError:
                        ok = False
                    lat.append((time.perf_counter() - t0) * 1000)
                    errors += not ok

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return lat, errors, time.perf_counter() - started

    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    if meter:
        meter.start()
    lat, errors, secs = runner(main())
    cpu = meter.stop() if meter else {}
    return LoadResult(
        "aiohttp", concurrency, secs, len(lat), errors, len(lat) / secs, pct(lat, 50), pct(lat, 90), pct(lat, 99), cpu
    )


# --------------------------------------------------------------------------- machine description


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        envoy = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True, timeout=20).stdout.strip()
        envoy = (
            re.search(r"version: \S+?/([\d.]+)", envoy).group(1) if re.search(r"version: \S+?/([\d.]+)", envoy) else envoy[:60]
        )
    except Exception:
        envoy = "?"
    try:
        import uvloop

        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio (uvloop not installed)"
    gpu = "none"
    if shutil.which("nvidia-smi"):
        gpu = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip() or "none"
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": gpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "envoy": envoy,
        "event_loop": loop,
        "load_generator": load_tool(),
    }


def print_machine(m: dict[str, Any]) -> None:
    print(
        f"machine: {m['cores']} cores ({m['cpu']}), GPU: {m['gpu']}, Python {m['python']}, Envoy {m['envoy']}, "
        f"{m['event_loop']}, load generator: {m['load_generator']}, {m['date']}"
    )
