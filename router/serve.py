"""The serving loop: gRPC ext_proc + health, admin HTTP, config hot reload, graceful drain.

Drain (SIGTERM or SIGINT): ``/readyz`` turns 503 and the gRPC health service NOT_SERVING at once; the
ext_proc server stays open while streams are in flight (a Fusion run's judge and synthesis calls come
back through Envoy as new streams, so closing the port would break the very requests being drained),
for at most ``global.router.drain_timeout_seconds``; then the server stops, whatever is left is
cancelled, and the process exits 0. A second SIGTERM/SIGINT cuts the wait short.

Workers (``--workers N``): this process serves gRPC port P and supervises workers 1..N-1 on P+1..; a
worker that dies (OOM kill, crash) is started again after a backoff that doubles with each quick death,
counted in ``fusion_router_worker_restarts_total``. While it is down Envoy's health check on the router
cluster keeps new streams away from its port.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import signal
import subprocess
import sys
import time

import grpc
import structlog
from grpc_health.v1 import health as health_mod

from router.app import App
from router.config.schema import Config
from router.extproc.auth import SecretError, load_secret
from router.extproc.server import build_server, set_serving
from router.observability import metrics, record
from router.observability.admin import start_admin
from router.observability.tracing import setup_tracing, shutdown_tracing
from router.processes import Restarter, spawn, stop_all
from router.reload import ConfigWatcher
from router.signals.runtime import build_runtime

log = structlog.get_logger("router.serve")

DRAIN_POLL_SECONDS = 0.05


# A Fusion sub-call that comes back through Envoy may reach any worker process: they share the secret.
LOOPER_SECRET_ENV = "FUSION_ROUTER_LOOPER_SECRET"


def _looper_secret() -> str:
    # Inherited from the parent process (workers), never passed further down.
    return os.environ.pop(LOOPER_SECRET_ENV, None) or secrets.token_urlsafe(32)


def _without(argv: list[str], flag: str) -> list[str]:
    if flag in argv:
        i = argv.index(flag)
        return argv[:i] + argv[i + 2 :]
    return [a for a in argv if not a.startswith(flag + "=")]


class Workers(Restarter):
    """Worker i serves ext_proc on grpc_port + i; Envoy lists every port as an endpoint of the router
    cluster (``envoy-config --router-workers N``) and spreads streams over them. One shared port with
    SO_REUSEPORT would spread connections only, and Envoy keeps one per worker thread.

    A worker that dies is started again on its own port by the shared supervisor (backoff doubling with
    each quick death), counted in ``fusion_router_worker_restarts_total``. Workers stay in this
    process's session, so whoever stops this process's session stops them too."""

    def __init__(self, args: argparse.Namespace, looper_secret: str):
        self.base_port = args.grpc_port
        argv = _without(_without(sys.argv[1:], "--workers"), "--grpc-port")
        self._argv = [sys.executable, "-m", "router.cli", *argv, "--workers", "1"]
        self._env = {**os.environ, LOOPER_SECRET_ENV: looper_secret}
        super().__init__(max(0, args.workers - 1), self._spawn, on_death=self._died, on_restart=self._restarted)

    def _spawn(self, i: int) -> subprocess.Popen[bytes]:
        return spawn([*self._argv, "--grpc-port", str(self.base_port + i + 1)], env=self._env, new_session=False)

    def _died(self, i: int, proc: subprocess.Popen[bytes], delay: float) -> None:
        _forget_metrics_of(proc.pid)
        log.error(
            "worker_died",
            worker=i + 1,
            pid=proc.pid,
            exit_code=proc.returncode,
            grpc_port=self.base_port + i + 1,
            restart_in_s=delay,
        )

    def _restarted(self, i: int, proc: subprocess.Popen[bytes]) -> None:
        metrics.WORKER_RESTARTS.inc()
        log.warning("worker_restarted", worker=i + 1, pid=proc.pid, grpc_port=self.base_port + i + 1)


def _forget_metrics_of(pid: int) -> None:
    """A dead worker's live gauges (in-flight streams) must not count in the sum any more."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # prometheus_client is untyped here


def _stop_workers(workers: list[subprocess.Popen[bytes]], timeout: float, terminate: bool = True) -> None:
    """SIGTERM the workers (unless they already got it: a second one would cut their drain short), wait
    for them up to ``timeout``, then kill what is left."""
    stop_all(workers, timeout, signalled=not terminate)


async def _workers_listening(base_port: int, workers: list[subprocess.Popen[bytes]], timeout: float = 600.0) -> bool:
    """Wait until every worker's gRPC port accepts connections, so this process (which answers readiness
    on the shared admin port too) never reports ready while Envoy would find a worker missing."""
    deadline = time.monotonic() + timeout
    pending = {base_port + i: w for i, w in enumerate(workers, start=1)}
    while pending and time.monotonic() < deadline:
        for port, proc in list(pending.items()):
            if proc.poll() is not None:
                return False
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            writer.close()
            del pending[port]
        if pending:
            await asyncio.sleep(0.1)
    return not pending


async def serve(config: Config, args: argparse.Namespace) -> int:
    rs = config.global_.router
    env_name, file_path = getattr(args, "ext_proc_secret_env", None), getattr(args, "ext_proc_secret_file", None)
    if not (env_name or file_path):
        env_name, file_path = rs.ext_proc_secret_env, rs.ext_proc_secret_file
    try:
        extproc_secret = load_secret(env_name, file_path)
    except SecretError as exc:
        print(f"fusion-router: cannot start: {exc}", file=sys.stderr)
        return 1
    if extproc_secret is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        # Anything that reaches this port can drive requests through the router (Fusion runs included).
        log.warning("extproc_exposed_without_secret", host=args.host, grpc_port=args.grpc_port)
    looper_secret = _looper_secret()
    pool = Workers(args, looper_secret)
    pool.start()
    workers = pool.procs
    try:
        setup_tracing(config.global_.observability.tracing)
    except RuntimeError as exc:
        print(f"fusion-router: cannot start: {exc}", file=sys.stderr)
        _stop_workers(workers, 5)
        return 1
    runtime = build_runtime(config)
    app = App.from_config(config, args.config, runtime)
    app.looper_endpoint = args.looper_endpoint
    app.allow_debug_header = bool(getattr(args, "allow_debug_header", False))
    app.looper_secret = looper_secret
    try:
        await app.start()
    except Exception as exc:  # noqa: BLE001 - a model that cannot load must stop start-up with its reason
        log.error("startup_failed", error=str(exc))
        print(f"fusion-router: cannot start: {exc}", file=sys.stderr)
        shutdown_tracing()
        _stop_workers(workers, 5)
        return 1
    server, health = build_server(app, f"{args.host}:{args.grpc_port}", secret=extproc_secret)
    await server.start()
    if workers and not await _workers_listening(args.grpc_port, workers):
        print("fusion-router: cannot start: a worker process failed to start", file=sys.stderr)
        await server.stop(0)
        await app.close()
        shutdown_tracing()
        _stop_workers(workers, 5)
        return 1
    watcher = ConfigWatcher(app)
    admin_host = getattr(args, "admin_host", None) or args.host
    admin = await start_admin(app, admin_host, args.admin_port, watcher)
    await set_serving(health, True)
    watcher.start()
    # Everything loaded so far (config, models, stubs) lives for the process: keep it out of GC scans, and
    # collect young objects less often (requests allocate many short-lived ones).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    log.info(
        "router_started",
        grpc=f"{args.host}:{args.grpc_port}",
        admin=f"{admin_host}:{args.admin_port}",
        extproc_auth=extproc_secret is not None,
        workers=args.workers,
        decisions=len(config.routing.decisions),
        models=len(config.models),
        config_version=app.policy.version,
        drain_timeout_seconds=config.global_.router.drain_timeout_seconds,
        classifier_provider=getattr(runtime, "provider", None),
    )

    stop = asyncio.Event()
    force = asyncio.Event()  # a second SIGTERM/SIGINT: stop waiting for in-flight streams

    def on_stop(name: str) -> None:
        if stop.is_set():
            log.warning("router_drain_forced", signal=name)
            force.set()
        stop.set()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, on_stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, on_stop, "SIGINT")

    reloads: set[asyncio.Future[bool]] = set()  # reloads in flight, held so none is garbage-collected mid-way

    def on_hup() -> None:
        reloads.add(task := asyncio.ensure_future(watcher.reload("sighup")))
        task.add_done_callback(reloads.discard)
        for w in pool.procs:
            if w.poll() is None:
                w.send_signal(signal.SIGHUP)  # each worker holds its own policy

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    supervisor = asyncio.ensure_future(pool.supervise(stop))
    await stop.wait()
    await supervisor  # no restarts from here on; pool.procs is final

    await drain(app, server, health, watcher, force, pool.procs)
    await admin.cleanup()
    await app.close()
    # The workers got SIGTERM when the drain began and drain the same way; wait for them, bounded.
    _stop_workers(pool.procs, app.config.global_.router.drain_timeout_seconds + 5, terminate=False)
    shutdown_tracing()
    log.info("router_stopped")
    return 0


async def drain(
    app: App,
    server: grpc.aio.Server,
    health: health_mod.HealthServicer,
    watcher: ConfigWatcher,
    force: asyncio.Event,
    workers: list[subprocess.Popen[bytes]] | None = None,
) -> None:
    """Not ready / NOT_SERVING now; wait for in-flight streams up to the grace period; stop the server."""
    loop = asyncio.get_running_loop()
    grace = app.config.global_.router.drain_timeout_seconds
    deadline = loop.time() + grace
    app.draining = True
    record.draining(True)
    log.info("router_draining", grace_seconds=grace, in_flight=record.in_flight())
    await set_serving(health, False)
    await watcher.stop()  # the policy in force now is the one the drain finishes on
    for w in workers or []:
        w.terminate()  # each worker drains its own streams the same way
    started = loop.time()
    while record.in_flight() > 0 and not force.is_set():
        left = deadline - loop.time()
        if left <= 0:
            break
        try:
            await asyncio.wait_for(force.wait(), min(DRAIN_POLL_SECONDS, left))
        except TimeoutError:
            pass
    left = 0.0 if force.is_set() else max(0.0, deadline - loop.time())
    remaining = record.in_flight()
    log.info(
        "router_drained" if remaining == 0 else "router_drain_timeout",
        waited_s=round(loop.time() - started, 3),
        in_flight=remaining,
    )
    # New streams are refused from here; anything still open gets what is left of the grace, then is cancelled.
    await server.stop(left if remaining else 0)
