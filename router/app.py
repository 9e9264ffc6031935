"""Process-wide state: the active policy (swapped atomically on reload), the looper engine, secrets."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from router.config import load_config
from router.config.schema import Backend, Config
from router.decisions.policy import Policy, compile_policy

log = structlog.get_logger("router.app")


@dataclass
class App:
    policy: Policy
    config_path: Path | None = None
    # Authenticates looper sub-calls that come back through Envoy; never leaves this process's hops.
    looper_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    runtime: object | None = None  # the classifier runtime (models), shared across reloads
    ready: bool = False
    draining: bool = False
    loopers: object = None  # router.looper.engine.Loopers, set in __post_init__
    last_reload_error: str | None = None
    looper_endpoint: str | None = None  # overrides the config's looper endpoint (local stacks on other ports)

    def __post_init__(self) -> None:
        from router.looper.engine import Loopers

        if self.loopers is None:
            self.loopers = Loopers(self)

    @classmethod
    def from_config(cls, config: Config, path: str | Path | None = None, runtime: object | None = None) -> App:
        policy = compile_policy(config, version="1", runtime=runtime)
        return cls(policy=policy, config_path=Path(path) if path else None, runtime=runtime)

    @classmethod
    def from_file(cls, path: str | Path, runtime: object | None = None) -> App:
        return cls.from_config(load_config(path), path, runtime)

    @property
    def config(self) -> Config:
        return self.policy.config

    def api_key(self, backend: Backend) -> str | None:
        return os.environ.get(backend.api_key_env) if backend.api_key_env else None

    def config_status(self) -> dict:
        return {
            "path": str(self.config_path) if self.config_path else None,
            "version": self.policy.version,
            "decisions": [d.name for d in self.config.routing.decisions],
            "models": [m.name for m in self.config.models],
            "last_error": self.last_reload_error,
        }

    async def start(self) -> None:
        await self.policy.start()
        self.ready = True

    async def close(self) -> None:
        await self.loopers.close()
        if self.runtime is not None:
            await self.runtime.close()  # type: ignore[attr-defined]
