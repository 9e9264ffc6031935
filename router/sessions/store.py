"""Where a session's model is remembered: in-process (TTL + LRU, one replica) or Redis (shared by every
replica; unreachable → ``StoreUnavailable`` and the request routes without affinity)."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import orjson

from router.stores.redis import RedisLink


@dataclass(frozen=True, slots=True)
class Pinned:
    """What a session remembers: the model, and the decision (with its priority) that chose it."""

    model: str
    decision: str
    priority: int

    def dumps(self) -> bytes:
        return orjson.dumps({"m": self.model, "d": self.decision, "p": self.priority})

    @classmethod
    def loads(cls, data: bytes) -> Pinned | None:
        try:
            doc = orjson.loads(data)
            return cls(str(doc["m"]), str(doc["d"]), int(doc["p"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None  # written by something else: treat as no session


class SessionStore(Protocol):
    name: str

    async def get(self, key: str) -> Pinned | None:
        """The pinned model (its TTL refreshed), or None."""

    async def put(self, key: str, pinned: Pinned) -> None: ...


class MemoryStore:
    name = "memory"

    def __init__(self, ttl_seconds: float, max_entries: int):
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._items: OrderedDict[str, tuple[float, Pinned]] = OrderedDict()

    async def get(self, key: str) -> Pinned | None:
        item = self._items.get(key)
        if item is None:
            return None
        now = time.monotonic()
        expires, pinned = item
        if expires <= now:
            del self._items[key]
            return None
        self._items[key] = (now + self.ttl, pinned)
        self._items.move_to_end(key)
        return pinned

    async def put(self, key: str, pinned: Pinned) -> None:
        self._items[key] = (time.monotonic() + self.ttl, pinned)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class RedisStore:
    name = "redis"

    def __init__(self, link: RedisLink, ttl_seconds: float):
        self.link = link
        self.ttl_ms = max(1, int(ttl_seconds * 1000))

    async def get(self, key: str) -> Pinned | None:
        data = await self.link.call("session_get", lambda r: r.getex(self.link.key("session", key), px=self.ttl_ms))
        return Pinned.loads(data) if data else None

    async def put(self, key: str, pinned: Pinned) -> None:
        await self.link.call("session_put", lambda r: r.set(self.link.key("session", key), pinned.dumps(), px=self.ttl_ms))
