"""A bounded cache of per-window model results, so no window of text is classified twice.

A conversation resends its earlier turns (and the same system prompt and tool definitions) with every
request; the guards read all of it. Results are kept per *window* (the unit the models score), keyed
by a hash of the model build and the window's normalised text, so the next turn pays only for what is
new. Bounded by an estimate of the bytes held (least recently used first out); ``max_bytes`` 0
disables it. Not thread-safe: the router uses it from the event loop only.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

# Bookkeeping per entry beyond the value itself: the key, the OrderedDict node, the size record.
_ENTRY_OVERHEAD = 160


def window_key(namespace: str, text: str) -> bytes:
    """128-bit key of ``text`` under ``namespace`` (the model build; see ``ModelRuntime``)."""
    h = hashlib.blake2b(namespace.encode(), digest_size=16)
    h.update(b"\x00")
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.digest()


def approx_bytes(value: Any, _depth: int = 0) -> int:
    """What ``value`` holds in memory, roughly: arrays by their buffers, containers and dataclasses by
    their items. Good enough to bound the cache within a small factor."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes) + 112
    if isinstance(value, (str, bytes)):
        return len(value) + 49
    if isinstance(value, (int, float, bool)) or value is None:
        return 28
    if _depth > 4:
        return 64
    if isinstance(value, dict):
        return 64 + sum(approx_bytes(k, _depth + 1) + approx_bytes(v, _depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return 56 + sum(approx_bytes(v, _depth + 1) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return 56 + sum(approx_bytes(getattr(value, f.name), _depth + 1) for f in dataclasses.fields(value))
    return 64


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    entries: int = 0
    bytes: int = 0


class ResultCache:
    """LRU of ``key → value`` bounded by ``max_bytes`` (estimated with :func:`approx_bytes`)."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = int(max_bytes)
        self._data: OrderedDict[bytes, tuple[Any, int]] = OrderedDict()
        self.stats = CacheStats()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: bytes) -> Any | None:
        """The value, or None (a miss). Counts the hit or miss."""
        item = self._data.get(key)
        if item is None:
            self.stats.misses += 1
            return None
        self._data.move_to_end(key)
        self.stats.hits += 1
        return item[0]

    def put(self, key: bytes, value: Any) -> None:
        if not self.enabled:
            return
        size = approx_bytes(value) + _ENTRY_OVERHEAD
        if size > self.max_bytes:
            return  # larger than the whole cache: keeping it would evict everything else
        old = self._data.pop(key, None)
        if old is not None:
            self.stats.bytes -= old[1]
        self._data[key] = (value, size)
        self.stats.bytes += size
        while self.stats.bytes > self.max_bytes and self._data:
            _, (_, dropped) = self._data.popitem(last=False)
            self.stats.bytes -= dropped
            self.stats.evictions += 1
        self.stats.entries = len(self._data)

    def clear(self) -> None:
        self._data.clear()
        self.stats.bytes = 0
        self.stats.entries = 0
