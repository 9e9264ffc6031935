"""Config hot reload: watch the file (and SIGHUP), validate fully, swap the policy atomically.

* The file is polled by content hash (every ``FUSION_ROUTER_CONFIG_POLL_SECONDS``, default 1 s; 0 turns
  polling off and leaves SIGHUP), which survives editors that replace files and Kubernetes ConfigMap
  symlink swaps. A change is re-read once after a short settle delay so a half-written file is not
  reported as broken.
* A reload validates the whole file (schema + cross references), compiles the policy and starts its
  signals (loading any model the new config needs) before anything is swapped.
* Success: one reference swap (``app.policy``). In-flight requests keep the policy they started with
  (``RequestState.policy``), new ones get the new one. Failure: the old policy keeps serving; the error
  is logged (``config_reload_failed``), counted and shown at ``/config`` until a good file is loaded.
* SIGHUP always reloads, even when the content did not change.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from router.config import ConfigError, load_config
from router.config.schema import Config
from router.decisions.policy import compile_policy
from router.observability import record
from router.signals.runtime import build_runtime

if TYPE_CHECKING:
    from router.app import App

log = structlog.get_logger("router.reload")

POLL_ENV = "FUSION_ROUTER_CONFIG_POLL_SECONDS"
SETTLE_SECONDS = 0.2

# Settings read once at start-up: a reload that changes them is applied, except for these parts.
_RESTART_ONLY: dict[str, Callable[[Config], object]] = {
    "global.observability": lambda c: c.global_.observability,
    "global.classifiers": lambda c: c.global_.classifiers,
}


def poll_interval(default: float = 1.0) -> float:
    raw = os.environ.get(POLL_ENV)
    if raw is None or raw.strip() == "":
        return default
    try:
        return max(0.0, float(raw))
    except ValueError:
        log.warning("config_poll_interval_invalid", value=raw, default=default)
        return default


class ConfigWatcher:
    def __init__(self, app: App, interval: float | None = None):
        self.app = app
        self.interval = poll_interval() if interval is None else interval
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._digest = self._read_digest()
        self.generation = int(app.policy.version) if str(app.policy.version).isdigit() else 1
        self.active_sha256 = self._digest
        self.loaded_at = time.time()
        self.last_attempt_at: float | None = None
        self.last_error_at: float | None = None
        self.reloads = {"ok": 0, "error": 0}
        record.config_active(self.generation)

    def _read_digest(self) -> str | None:
        path = self.app.config_path
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest() if path else None
        except OSError:
            return None

    def start(self) -> None:
        if self.app.config_path is not None and self.interval > 0:
            self._task = asyncio.create_task(self._poll(), name="config-watcher")
        log.info(
            "config_watch_started",
            path=str(self.app.config_path) if self.app.config_path else None,
            poll_seconds=self.interval,
            version=self.generation,
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            digest = self._read_digest()
            if digest is None or digest == self._digest:
                continue
            await asyncio.sleep(SETTLE_SECONDS)  # let a writer that is still writing finish
            if self._read_digest() != digest:
                continue  # still changing: look again at the next tick
            try:
                await self.reload("file_changed")
            except Exception:
                log.exception("config_reload_crashed")

    async def reload(self, reason: str) -> bool:
        """Load, validate and swap in the config file; False (old policy kept) when it is unusable."""
        async with self._lock:
            return await self._reload(reason)

    async def _reload(self, reason: str) -> bool:
        app = self.app
        path = app.config_path
        if path is None:
            return False
        self.last_attempt_at = time.time()
        digest = self._read_digest()
        self._digest = digest  # a file changed again meanwhile differs from this, and is reloaded next tick
        old = app.policy
        version = self.generation + 1
        try:
            config = load_config(path)
            runtime = app.runtime or build_runtime(config)  # the new policy may be the first to need models
            policy = compile_policy(config, version=str(version), runtime=runtime)
            await policy.start()
        except Exception as exc:  # noqa: BLE001 - a bad file, or e.g. a model the new config names is missing
            app.last_reload_error = str(exc) if isinstance(exc, ConfigError) else f"{path}: {type(exc).__name__}: {exc}"
            self.last_error_at = time.time()
            self.reloads["error"] += 1
            log.error(
                "config_reload_failed", reason=reason, path=str(path), error=app.last_reload_error, active_version=old.version
            )
            record.config_reloaded(False)
            return False
        self.generation = version
        app.policy = policy  # one reference swap: requests in flight hold the old policy
        app.runtime = runtime
        app.last_reload_error = None
        self.active_sha256 = digest
        self.loaded_at = time.time()
        self.last_error_at = None
        self.reloads["ok"] += 1
        record.config_reloaded(True, version)
        restart = _restart_only_changes(old.config, config)
        log.info(
            "config_reloaded",
            reason=reason,
            path=str(path),
            version=policy.version,
            previous_version=old.version,
            sha256=digest,
            decisions=len(config.routing.decisions),
            models=len(config.models),
        )
        if restart:
            log.warning(
                "config_reload_needs_restart",
                sections=restart,
                detail="these settings are read at start-up; the running process keeps the old values",
            )
        return True

    def status(self) -> dict[str, Any]:
        """What ``/config`` shows besides the app's own summary."""
        return {
            "sha256": self.active_sha256,
            "loaded_at": _iso(self.loaded_at),
            "last_attempt_at": _iso(self.last_attempt_at),
            "last_error_at": _iso(self.last_error_at),
            "reloads": dict(self.reloads),
            "poll_seconds": self.interval,
        }


def _restart_only_changes(old: Config, new: Config) -> list[str]:
    return [name for name, get in _RESTART_ONLY.items() if get(old) != get(new)]


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
