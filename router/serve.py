"""The serving loop: gRPC ext_proc + health, admin HTTP, config hot reload, graceful drain."""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys

import structlog

from router.app import App
from router.config.schema import Config
from router.extproc.server import build_server, set_serving
from router.observability.admin import start_admin
from router.observability.tracing import setup_tracing
from router.reload import ConfigWatcher
from router.signals.runtime import build_runtime

log = structlog.get_logger("router.serve")


def _spawn_workers(args: argparse.Namespace) -> list[subprocess.Popen]:
    # Extra processes bind the same port (SO_REUSEPORT); the kernel spreads Envoy's connections.
    argv = [a for a in sys.argv[1:]]
    if "--workers" in argv:
        i = argv.index("--workers")
        del argv[i : i + 2]
    return [subprocess.Popen([sys.executable, "-m", "router.cli", *argv, "--workers", "1"]) for _ in range(args.workers - 1)]


async def serve(config: Config, args: argparse.Namespace) -> int:
    workers = _spawn_workers(args) if args.workers > 1 else []
    try:
        setup_tracing(config.global_.observability.tracing)
    except RuntimeError as exc:
        print(f"fusion-router: cannot start: {exc}", file=sys.stderr)
        return 1
    runtime = build_runtime(config)
    app = App.from_config(config, args.config, runtime)
    app.looper_endpoint = args.looper_endpoint
    try:
        await app.start()
    except Exception as exc:  # noqa: BLE001 - a model that cannot load must stop start-up with its reason
        log.error("startup_failed", error=str(exc))
        print(f"fusion-router: cannot start: {exc}", file=sys.stderr)
        return 1
    server, health = build_server(app, f"{args.host}:{args.grpc_port}")
    await server.start()
    admin = await start_admin(app, args.host, args.admin_port)
    await set_serving(health, True)
    watcher = ConfigWatcher(app)
    watcher.start()
    log.info("router_started", grpc=f"{args.host}:{args.grpc_port}", admin=f"{args.host}:{args.admin_port}",
             decisions=len(config.routing.decisions), models=len(config.models),
             classifier_provider=getattr(runtime, "provider", None))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(watcher.reload("sighup")))
    await stop.wait()

    grace = app.config.global_.router.drain_timeout_seconds
    log.info("router_draining", grace_seconds=grace)
    app.draining = True
    await set_serving(health, False)
    for w in workers:
        w.terminate()
    # New streams are refused; in-flight ones (a Fusion run included) get up to `grace` seconds.
    await server.stop(grace)
    await watcher.stop()
    await admin.cleanup()
    await app.close()
    for w in workers:
        try:
            w.wait(grace + 5)
        except subprocess.TimeoutExpired:
            w.kill()
    log.info("router_stopped")
    return 0
