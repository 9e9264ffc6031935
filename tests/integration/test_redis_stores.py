"""The shared-state stores against a real redis-server: sessions and tenant token windows shared by two
links (two replicas), script-checked windows, and a Redis that goes away: every call fails fast into
StoreUnavailable, the breaker stops asking for a while, the metrics say so, and it recovers."""

from __future__ import annotations

import pytest

import router.config  # noqa: F401 - the config package first (its schema imports the store settings)
from router.observability import metrics as M
from router.sessions.store import Pinned, RedisStore
from router.stores.redis import RedisLink, StoreUnavailable
from router.stores.settings import RedisSettings
from router.tenants.tokens import RedisWindow
from tests.integration.redis_server import RedisServer


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def link(server: RedisServer, **kw) -> RedisLink:
    # A generous timeout: these tests check behaviour on 2 shared cores, not Redis latency.
    return RedisLink(RedisSettings(address=server.address, key_prefix="t:", **{"timeout_ms": 2000, **kw}))


async def test_two_links_share_sessions(redis):
    a, b = link(redis), link(redis)
    sa, sb = RedisStore(a, 60), RedisStore(b, 60)
    await sa.put("conv", Pinned("m1", "chat", 10))
    assert await sb.get("conv") == Pinned("m1", "chat", 10)
    assert await sb.get("other") is None
    assert b"t:session:conv" in redis.command("KEYS", "*")
    ttl = int(redis.command("PTTL", "t:session:conv")[1:].split(b"\r\n")[0])
    assert 0 < ttl <= 60_000
    await a.close()
    await b.close()


async def test_token_windows_are_checked_and_charged_atomically(redis):
    a, b = RedisWindow(link(redis)), RedisWindow(link(redis))
    assert (await a.admit("acme", 60, 100)).admitted
    refused = await b.admit("acme", 50, 100)  # the other replica sees the first one's tokens
    assert not refused.admitted and refused.used == 60 and 1 <= refused.retry_after <= 60
    assert (await b.admit("acme", 40, 100)).admitted
    await a.charge("acme", 5)
    assert (await a.admit("acme", 1, 100)).used == 105
    assert (await a.admit("beta", 100, 100)).admitted  # tenants are separate
    await a.link.close()
    await b.link.close()


async def test_a_dead_redis_fails_fast_opens_the_breaker_and_recovers(tmp_path):
    server = RedisServer(tmp_path).start()
    lk = link(server, retry_interval_ms=0)
    store = RedisStore(lk, 60)
    await store.put("k", Pinned("m", "d", 1))
    server.stop()
    before = M.STATE_STORE_ERRORS.labels("redis", "session_get", "ConnectionError")._value.get()
    with pytest.raises(StoreUnavailable):
        await store.get("k")
    assert M.STATE_STORE_UP.labels("redis")._value.get() == 0
    assert M.STATE_STORE_ERRORS.labels("redis", "session_get", "ConnectionError")._value.get() == before + 1
    # With a breaker interval, the next call does not even try.
    lk.settings = lk.settings.model_copy(update={"retry_interval_ms": 60_000})
    with pytest.raises(StoreUnavailable):
        await store.get("k")
    with pytest.raises(StoreUnavailable):
        await store.get("k")
    assert M.STATE_STORE_ERRORS.labels("redis", "session_get", "breaker_open")._value.get() >= 1
    # Back on the same port (empty: no persistence), and the breaker closed: it answers again.
    server = RedisServer(tmp_path, port=server.port).start()
    lk._open_until = 0.0
    assert await store.get("k") is None
    assert M.STATE_STORE_UP.labels("redis")._value.get() == 1
    await lk.close()
    server.stop()
