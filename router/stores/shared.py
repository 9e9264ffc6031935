"""The process's shared-state objects, built from the live config and rebuilt only when their own
settings change on reload (an edited tenant list keeps the token windows; an unchanged session store
keeps its sessions)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from router.config.schema import Global
from router.sessions.affinity import Sessions
from router.sessions.store import MemoryStore, RedisStore
from router.stores.redis import RedisLink
from router.tenants.tokens import MemoryWindow, RedisWindow, TokenWindow


@dataclass
class SharedState:
    link: RedisLink | None = None
    sessions: Sessions | None = None
    tokens: TokenWindow | None = None
    _keys: dict[str, object] = field(default_factory=dict)

    def refresh(self, g: Global) -> SharedState:
        """Bring every part in line with ``g`` (cheap when nothing changed)."""
        if _changed(self._keys.get("redis", _UNSET), g.redis):
            old, self.link = self.link, (RedisLink(g.redis) if g.redis is not None else None)
            self._keys["redis"] = g.redis
            self._keys.pop("sessions", None)
            self._keys.pop("tokens", None)
            if old is not None:
                _close_later(old)
        if _changed(self._keys.get("sessions", _UNSET), g.sessions):
            s = g.sessions
            store = (
                RedisStore(self.link, s.ttl_seconds)
                if s.store == "redis" and self.link
                else MemoryStore(s.ttl_seconds, s.max_entries)
            )
            self.sessions = Sessions(s, store)
            self._keys["sessions"] = s
        if _changed(self._keys.get("tokens", _UNSET), g.tenants.tokens_store):
            self.tokens = RedisWindow(self.link) if g.tenants.tokens_store == "redis" and self.link else MemoryWindow()
            self._keys["tokens"] = g.tenants.tokens_store
        return self

    async def warm(self) -> None:
        if self.link is not None:
            await self.link.warm()

    async def close(self) -> None:
        if self.link is not None:
            await self.link.close()


_UNSET = object()


def _changed(old: object, new: object) -> bool:
    # Configs are immutable and swapped whole on reload: the same object is the common case.
    return old is not new and old != new


def _close_later(link: RedisLink) -> None:
    try:
        asyncio.get_running_loop().create_task(link.close())
    except RuntimeError:
        pass  # no loop (a reload outside serving): nothing was opened on it
