"""Process-wide state: the active policy (swapped atomically on reload), the looper runner, secrets."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from router.config import load_config
from router.config.schema import Backend, Config
from router.decisions.policy import Policy, compile_policy
from router.looper.runner import LooperRunner
from router.signals.admission import Admission
from router.signals.runtime import ClassifierRuntime
from router.stores.shared import SharedState

log = structlog.get_logger("router.app")


@dataclass
class App:
    policy: Policy
    config_path: Path | None = None
    # Authenticates looper sub-calls that come back through Envoy; never leaves this process's hops.
    looper_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    runtime: ClassifierRuntime | None = None  # the classifier runtime (models), shared across reloads
    ready: bool = False
    draining: bool = False
    loopers: LooperRunner = field(init=False)
    last_reload_error: str | None = None
    looper_endpoint: str | None = None  # overrides the config's looper endpoint (local stacks on other ports)
    allow_debug_header: bool = False  # serve --allow-debug-header: the simulated demo, whatever the config says
    _admission: Admission | None = None
    _admission_key: tuple[int, int, float] | None = None
    _shared: SharedState = field(default_factory=SharedState)

    def __post_init__(self) -> None:
        # Built here, explicitly: the runner reads the live config and secret through this App.
        self.loopers = LooperRunner(self)

    @classmethod
    def from_config(cls, config: Config, path: str | Path | None = None, runtime: ClassifierRuntime | None = None) -> App:
        policy = compile_policy(config, version="1", runtime=runtime)
        return cls(policy=policy, config_path=Path(path) if path else None, runtime=runtime)

    @classmethod
    def from_file(cls, path: str | Path, runtime: ClassifierRuntime | None = None) -> App:
        return cls.from_config(load_config(path), path, runtime)

    @property
    def config(self) -> Config:
        return self.policy.config

    @property
    def admission(self) -> Admission:
        """One admission gate per process, rebuilt when a reload changes its settings."""
        c = self.config.global_.classifiers
        key = (c.max_concurrent_requests, c.max_waiting_requests, c.request_deadline_ms)
        if self._admission is None or self._admission_key != key:
            self._admission = Admission(c.max_concurrent_requests, c.max_waiting_requests, c.request_deadline_ms / 1000)
            self._admission_key = key
        return self._admission

    @property
    def shared(self) -> SharedState:
        """Session store, tenant token windows and their Redis link, in line with the live config."""
        return self._shared.refresh(self.config.global_)

    def api_key(self, backend: Backend) -> str | None:
        return os.environ.get(backend.api_key_env) if backend.api_key_env else None

    def config_status(self) -> dict[str, Any]:
        return {
            "path": str(self.config_path) if self.config_path else None,
            "version": self.policy.version,
            "decisions": [d.name for d in self.config.routing.decisions],
            "models": [m.name for m in self.config.models],
            "last_error": self.last_reload_error,
        }

    async def start(self) -> None:
        await self.policy.start()
        await self.shared.warm()
        self.ready = True

    async def close(self) -> None:
        await self.loopers.close()
        await self._shared.close()
        if self.runtime is not None:
            await self.runtime.close()
