"""One Redis link per process: ``redis.asyncio`` with a short timeout on every call, no client-side
retries, and a breaker: after a failure Redis is not asked again for ``retry_interval_ms``, so a dead
Redis costs one timeout, not one per request. Every failure is counted
(``fusion_router_state_store_errors_total``), the link's state is a gauge
(``fusion_router_state_store_up``), and the first failure after a healthy spell is logged (the next
success too). Callers get ``StoreUnavailable`` and carry on without the shared state."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

from router.observability import record
from router.stores.settings import RedisSettings

log = structlog.get_logger("router.stores")

T = TypeVar("T")


def _no_setinfo() -> dict[str, Any]:
    """Client options that skip CLIENT SETINFO on every new connection (two round trips for nothing)."""
    try:
        from redis import DriverInfo  # redis-py >= 7

        return {"driver_info": DriverInfo(name=None, lib_version=None)}
    except ImportError:
        return {"lib_name": None, "lib_version": None}


class StoreUnavailable(Exception):
    """Redis did not answer (down, timeout, breaker open); the caller routes without it."""


class RedisLink:
    def __init__(self, settings: RedisSettings):
        self.settings = settings
        self._client: Any = None
        self._open_until = 0.0  # breaker: no calls before this monotonic time
        self._healthy = True
        record.state_store_up("redis", True)

    def _redis(self) -> Any:
        if self._client is None:
            import redis.asyncio as aioredis  # imported only when a config asks for Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            s = self.settings
            host, _, port = s.address.rpartition(":")
            password = os.environ.get(s.password_env) if s.password_env else None
            timeout = s.timeout_ms / 1000
            self._client = aioredis.Redis(
                host=host.strip("[]"),
                port=int(port),
                db=s.database,
                password=password,
                ssl=s.tls,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
                decode_responses=False,
                **_no_setinfo(),
            )
        return self._client

    def key(self, *parts: str) -> str:
        return self.settings.key_prefix + ":".join(parts)

    async def call(self, op: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``fn(client)`` under the timeout; raise StoreUnavailable on any failure."""
        if time.monotonic() < self._open_until:
            record.state_store_error("redis", op, "breaker_open")
            raise StoreUnavailable("redis skipped after a recent failure")
        try:
            async with asyncio.timeout(self.settings.timeout_ms / 1000):
                result = await fn(self._redis())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any Redis failure means "no shared state now"
            reason = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            self._open_until = time.monotonic() + self.settings.retry_interval_ms / 1000
            record.state_store_error("redis", op, reason)
            if self._healthy:
                self._healthy = False
                record.state_store_up("redis", False)
                log.warning(
                    "state_store_unavailable", store="redis", op=op, reason=reason, retry_in_ms=self.settings.retry_interval_ms
                )
            raise StoreUnavailable(reason) from None
        if not self._healthy:
            self._healthy = True
            record.state_store_up("redis", True)
            log.info("state_store_available", store="redis", op=op)
        return result

    async def warm(self, timeout: float = 2.0) -> bool:
        """Open a first connection at start (outside any request's short timeout); never fails start-up."""
        try:
            async with asyncio.timeout(timeout):
                await self._redis().ping()
        except Exception as exc:  # noqa: BLE001 - Redis down at start: routing goes on without it
            self._healthy = False
            record.state_store_up("redis", False)
            log.warning("state_store_unavailable", store="redis", op="ping", reason=type(exc).__name__)
            return False
        return True

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await client.aclose()
            except Exception as exc:  # noqa: BLE001 - closing a link to a dead Redis must not fail shutdown
                log.debug("state_store_close_failed", store="redis", reason=type(exc).__name__)
