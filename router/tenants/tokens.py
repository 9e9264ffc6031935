"""Per-tenant tokens per minute over a sliding window of one-second buckets: in-process, or one Redis
hash per tenant updated by a script (check and charge in one step, so replicas cannot both take the
last tokens). A request is charged its estimate on admission (prompt + the completion cap it asks
for); a looper run is charged what it really spent beyond that once it ends. Over budget → 429 with
``retry-after`` (when enough of the window will have expired); one request larger than the whole
budget → 413. Redis down → admitted uncounted (routing never depends on Redis), and counted in metrics."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from router.observability import record
from router.openai.errors import OpenAIError
from router.stores.redis import RedisLink, StoreUnavailable

log = structlog.get_logger("router.tenants")

WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Verdict:
    admitted: bool
    used: int  # tokens in the window before this request
    retry_after: int = 0  # seconds, when refused


def retry_after(buckets: Iterable[tuple[int, int]], used: int, cost: int, limit: int, now: int) -> int:
    """Seconds until enough of the window has expired for ``cost`` to fit (buckets: (second, tokens))."""
    need = used + cost - limit
    freed = 0
    for second, tokens in sorted(buckets):
        freed += tokens
        if freed >= need:
            return max(1, second + WINDOW_SECONDS - now)
    return WINDOW_SECONDS


class TokenWindow(Protocol):
    name: str

    async def admit(self, tenant: str, cost: int, limit: int) -> Verdict: ...

    async def charge(self, tenant: str, tokens: int) -> None: ...


@dataclass
class MemoryWindow:
    name: str = "memory"
    _buckets: dict[str, dict[int, int]] = field(default_factory=dict)

    def _live(self, tenant: str, now: int) -> dict[int, int]:
        buckets = self._buckets.setdefault(tenant, {})
        for second in [s for s in buckets if s <= now - WINDOW_SECONDS]:
            del buckets[second]
        return buckets

    async def admit(self, tenant: str, cost: int, limit: int) -> Verdict:
        now = int(time.time())
        buckets = self._live(tenant, now)
        used = sum(buckets.values())
        if used + cost > limit:
            return Verdict(False, used, retry_after(buckets.items(), used, cost, limit, now))
        buckets[now] = buckets.get(now, 0) + cost
        return Verdict(True, used)

    async def charge(self, tenant: str, tokens: int) -> None:
        now = int(time.time())
        buckets = self._live(tenant, now)
        buckets[now] = buckets.get(now, 0) + tokens


# KEYS[1]: the tenant's hash; ARGV: now, window, cost, limit. Drops expired buckets, then either
# refuses ({0, used, second1, tokens1, ...}) or charges the current second ({1, used}).
_ADMIT = """
local now, window, cost, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local flat = redis.call('HGETALL', KEYS[1])
local used, live = 0, {}
for i = 1, #flat, 2 do
  local second, tokens = tonumber(flat[i]), tonumber(flat[i + 1])
  if second <= now - window then
    redis.call('HDEL', KEYS[1], flat[i])
  else
    used = used + tokens
    live[#live + 1] = second
    live[#live + 1] = tokens
  end
end
if used + cost > limit then
  local out = {0, used}
  for i = 1, #live do out[#out + 1] = live[i] end
  return out
end
redis.call('HINCRBY', KEYS[1], tostring(now), cost)
redis.call('EXPIRE', KEYS[1], window * 2)
return {1, used}
"""


class RedisWindow:
    name = "redis"

    def __init__(self, link: RedisLink):
        self.link = link
        self._script: Any = None

    def _admit_script(self, r: Any) -> Any:
        if self._script is None:
            self._script = r.register_script(_ADMIT)
        return self._script

    async def admit(self, tenant: str, cost: int, limit: int) -> Verdict:
        now = int(time.time())
        key = self.link.key("tpm", tenant)
        out = await self.link.call(
            "tokens_admit", lambda r: self._admit_script(r)(keys=[key], args=[now, WINDOW_SECONDS, cost, limit])
        )
        admitted, used = int(out[0]), int(out[1])
        if admitted:
            return Verdict(True, used)
        pairs = [(int(out[i]), int(out[i + 1])) for i in range(2, len(out) - 1, 2)]
        return Verdict(False, used, retry_after(pairs, used, cost, limit, now))

    async def charge(self, tenant: str, tokens: int) -> None:
        key = self.link.key("tpm", tenant)

        async def add(r: Any) -> Any:
            pipe = r.pipeline(transaction=False)
            pipe.hincrby(key, str(int(time.time())), tokens)
            pipe.expire(key, WINDOW_SECONDS * 2)
            return await pipe.execute()

        await self.link.call("tokens_charge", add)


async def admit(window: TokenWindow, tenant: str, cost: int, limit: int, request_id: str = "") -> None:
    """Raise 413 / 429 when the tenant's budget cannot take ``cost`` tokens now."""
    if cost > limit:
        record.tenant_tokens(tenant, "too_large")
        raise OpenAIError(
            413,
            f"This request needs about {cost} tokens, more than the tenant's whole budget of {limit} tokens "
            "per minute; shorten it or lower max_completion_tokens.",
            "request_exceeds_token_budget",
        )
    try:
        verdict = await window.admit(tenant, cost, limit)
    except StoreUnavailable:
        record.tenant_tokens(tenant, "unavailable")
        return  # admitted uncounted: a dead Redis must not stop traffic
    if not verdict.admitted:
        record.tenant_tokens(tenant, "refused")
        log.info(
            "tenant_rate_limited",
            request_id=request_id,
            tenant=tenant,
            used=verdict.used,
            cost=cost,
            limit=limit,
            retry_after=verdict.retry_after,
        )
        raise OpenAIError(
            429,
            f"The tenant's budget of {limit} tokens per minute is spent ({verdict.used} used in the last "
            f"minute, this request needs about {cost}); retry after {verdict.retry_after}s.",
            "tenant_rate_limited",
            type="rate_limit_error",
            headers={"retry-after": str(verdict.retry_after)},
        )
    record.tenant_tokens(tenant, "admitted", cost)


async def charge(window: TokenWindow, tenant: str, tokens: int) -> None:
    """Tokens a looper run spent beyond its admission estimate (never refused: the work is done)."""
    if tokens <= 0:
        return
    try:
        await window.charge(tenant, tokens)
    except StoreUnavailable:
        record.tenant_tokens(tenant, "unavailable")
        return
    record.tenant_tokens(tenant, "charged", tokens)
