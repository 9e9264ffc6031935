"""Config hot reload: watch the file (and SIGHUP), validate fully, swap the policy atomically.

In-flight requests keep the policy they started with (``RequestState.policy``); a broken file keeps
the old policy serving and the error is logged and shown at ``/config``.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING

import structlog

from router.config import ConfigError, load_config
from router.decisions.policy import compile_policy
from router.observability import metrics
from router.signals.runtime import build_runtime

if TYPE_CHECKING:
    from router.app import App

log = structlog.get_logger("router.reload")


class ConfigWatcher:
    def __init__(self, app: App, interval: float = 1.0):
        self.app = app
        self.interval = interval
        self._task: asyncio.Task | None = None
        self._digest = self._read_digest()
        self._generation = 1

    def _read_digest(self) -> str | None:
        path = self.app.config_path
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest() if path else None
        except OSError:
            return None

    def start(self) -> None:
        if self.app.config_path is not None:
            self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _poll(self) -> None:
        # Polling the content hash survives editors that replace files and Kubernetes ConfigMap symlink swaps.
        while True:
            await asyncio.sleep(self.interval)
            digest = self._read_digest()
            if digest is not None and digest != self._digest:
                await self.reload("file_changed")

    async def reload(self, reason: str) -> bool:
        app = self.app
        path = app.config_path
        if path is None:
            return False
        self._digest = self._read_digest()
        try:
            config = load_config(path)
            runtime = app.runtime or build_runtime(config)  # the new policy may be the first to need models
            policy = compile_policy(config, version=str(self._generation + 1), runtime=runtime)
            await policy.start()
        except Exception as exc:  # noqa: BLE001 - a bad file, or e.g. a model the new config names is missing
            app.last_reload_error = str(exc) if isinstance(exc, ConfigError) else f"{path}: {exc}"
            log.error("config_reload_failed", reason=reason, error=app.last_reload_error)
            metrics.CONFIG_RELOADS.labels(outcome="error").inc()
            metrics.CONFIG_ERROR.set(1)
            return False
        self._generation += 1
        app.policy = policy  # one reference swap: requests in flight hold the old policy
        app.runtime = runtime
        app.last_reload_error = None
        metrics.CONFIG_RELOADS.labels(outcome="ok").inc()
        metrics.CONFIG_ERROR.set(0)
        log.info("config_reloaded", reason=reason, version=policy.version, decisions=len(config.routing.decisions))
        return True
