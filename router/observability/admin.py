"""Admin HTTP surface on the metrics port: /healthz, /readyz, /metrics, /config.

* ``/healthz``: 200 while the process serves HTTP at all (liveness).
* ``/readyz``: 200 once models are loaded and the config is valid; 503 while starting or draining.
* ``/metrics``: Prometheus text format (router/observability/metrics.py).
* ``/config``: the active config version and file hash, and the last reload error (null when none).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

if TYPE_CHECKING:
    from router.app import App
    from router.reload import ConfigWatcher


def _scrape() -> bytes:
    """This process's metrics, or every worker's summed when the router runs several (multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # prometheus_client is untyped here
        return generate_latest(registry)
    return generate_latest()


def build_admin(app: App, watcher: ConfigWatcher | None = None) -> web.Application:
    admin = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "draining" if app.draining else "ok"})

    async def readyz(_: web.Request) -> web.Response:
        if app.draining:
            return web.json_response({"status": "draining"}, status=503)
        if not app.ready:
            return web.json_response({"status": "starting"}, status=503)
        return web.json_response({"status": "ready", "config_version": app.policy.version})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=_scrape(), headers={"content-type": CONTENT_TYPE_LATEST})

    async def config(_: web.Request) -> web.Response:
        body: dict[str, Any] = app.config_status()
        if watcher is not None:
            body.update(watcher.status())
        body["draining"] = app.draining
        return web.json_response(body)

    admin.router.add_get("/healthz", healthz)
    admin.router.add_get("/readyz", readyz)
    admin.router.add_get("/metrics", metrics)
    admin.router.add_get("/config", config)
    return admin


async def start_admin(app: App, host: str, port: int, watcher: ConfigWatcher | None = None) -> web.AppRunner:
    runner = web.AppRunner(build_admin(app, watcher), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=True).start()
    return runner
