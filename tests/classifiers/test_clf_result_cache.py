"""The per-window result cache: bounded by bytes, least recently used out, counted."""

from __future__ import annotations

import numpy as np

from classifiers.result_cache import ResultCache, approx_bytes, window_key
from classifiers.shared import Features


def vec(n: int = 384) -> Features:
    return Features({"embedding": np.zeros(n, np.float32), "jailbreak": np.zeros(2, np.float32)}, False)


def test_keys_depend_on_namespace_and_text() -> None:
    assert window_key("a", "x") == window_key("a", "x")
    assert window_key("a", "x") != window_key("b", "x") != window_key("a", "y")
    assert len(window_key("a", "x" * 100_000)) == 16


def test_hits_misses_and_lru_eviction_by_bytes() -> None:
    one = approx_bytes(vec()) + 160
    cache = ResultCache(3 * one)
    keys = [window_key("ns", str(i)) for i in range(5)]
    for k in keys[:3]:
        cache.put(k, vec())
    assert len(cache) == 3 and cache.stats.bytes == 3 * one
    assert cache.get(keys[0]) is not None  # keys[0] is now the most recently used
    cache.put(keys[3], vec())
    assert cache.get(keys[1]) is None  # the least recently used went
    assert cache.get(keys[0]) is not None and cache.get(keys[3]) is not None
    assert cache.stats.evictions == 1 and cache.stats.bytes <= cache.max_bytes
    assert (cache.stats.hits, cache.stats.misses) == (3, 1)


def test_disabled_and_oversized_values_are_not_kept() -> None:
    off = ResultCache(0)
    off.put(window_key("ns", "a"), vec())
    assert not off.enabled and len(off) == 0 and off.get(window_key("ns", "a")) is None
    small = ResultCache(1000)
    small.put(window_key("ns", "a"), vec())  # ~1.7 kB: bigger than the whole cache
    assert len(small) == 0 and small.stats.bytes == 0


def test_size_estimate_counts_array_buffers() -> None:
    assert approx_bytes(np.zeros(1000, np.float32)) >= 4000
    assert approx_bytes(vec(1024)) > approx_bytes(vec(384)) + 2500
