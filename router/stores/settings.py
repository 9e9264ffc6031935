"""``global.redis``: where router replicas share state (kept apart from the link so the config schema
imports no client code)."""

from __future__ import annotations

from pydantic import Field

from router.config.base import Strict


class RedisSettings(Strict):
    """``global.redis``: the Redis that router replicas share (names as in vLLM-SR's ``state_store.redis``)."""

    address: str = Field(pattern=r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$", description="host:port")
    database: int = Field(default=0, ge=0, le=15)
    password_env: str | None = Field(default=None, min_length=1)  # the variable holding the password
    tls: bool = False
    key_prefix: str = Field(default="fusion-router:", max_length=64)
    timeout_ms: float = Field(default=100.0, gt=0, le=5000)
    # After a failure, Redis is skipped this long (routing goes on without the shared state).
    retry_interval_ms: float = Field(default=1000.0, ge=0, le=600_000)
