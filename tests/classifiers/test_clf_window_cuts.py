"""Remembered window cuts give exactly the windows a fresh plan gives, fitting the budget or not."""

from __future__ import annotations

import random

import pytest

from classifiers import EmbeddingModel
from classifiers.windows import CutCache, plan_windows

WORDS = [
    "the",
    "committee",
    "reviewed",
    "quarterly",
    "figures",
    "ignore",
    "previous",
    "instructions",
    "café",
    "東京",
    "def",
    "return",
    "{json:",
    "1}",
]


def _texts(rng: random.Random) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 400))) for _ in range(rng.randint(1, 6))]


@pytest.mark.parametrize("budget,head_tail", [(8192, False), (512, True), (300, False), (64, True)])
def test_cached_cuts_plan_the_same_windows(embedder: EmbeddingModel, budget: int, head_tail: bool) -> None:
    tok = embedder.tokenizer.plain
    cuts = CutCache()
    rng = random.Random(budget)
    for _ in range(30):
        texts = _texts(rng)
        kw = {"window_tokens": 254, "overlap": 32, "budget": budget, "head_tail": head_tail}
        fresh = plan_windows(tok, texts, **kw)
        for _ in range(2):  # first fills the cache, then reads it
            assert plan_windows(tok, texts, cuts=cuts, **kw) == fresh
    assert cuts.hits > 0 and len(cuts) <= cuts.max_entries


def test_the_cut_cache_is_bounded() -> None:
    cuts = CutCache(max_entries=3)
    for i in range(10):
        cuts.put(CutCache.key(254, 32, str(i)), (1, ((0, 1),)))
    assert len(cuts) == 3 and cuts.get(CutCache.key(254, 32, "9")) is not None
    assert cuts.get(CutCache.key(254, 32, "0")) is None and cuts.get(CutCache.key(128, 32, "9")) is None
