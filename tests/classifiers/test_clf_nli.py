"""The NLI pair classifier from ``make models``: its output, batching, truncation, metadata, and the
micro-batcher with pair items; the corpus generator's labels and split on its own."""

from __future__ import annotations

import random

import numpy as np
import pytest

from classifiers import MicroBatcher, PairClassifier, load_model
from classifiers.build.nli_corpus import _contradict
from tests.classifiers.conftest import model_dir


@pytest.fixture(scope="module")
def nli() -> PairClassifier:
    m = load_model(model_dir("nli"), device="cpu")
    assert isinstance(m, PairClassifier)
    return m


def test_three_labels_and_clear_cases(nli: PairClassifier) -> None:
    assert nli.labels == ("entailment", "neutral", "contradiction")
    premise = "Oslo: 4 degrees Celsius, light rain."
    out = nli.run(
        [
            (premise, "Oslo has 4 degrees Celsius and light rain."),
            (premise, "It is 25 degrees Celsius and sunny in Oslo."),
            ("The patient is allergic to penicillin.", "The patient takes insulin daily."),
        ]
    )
    assert [r.label for r in out] == ["entailment", "contradiction", "neutral"]
    assert all(abs(sum(r.probs.values()) - 1) < 1e-4 for r in out)


def test_batching_never_changes_a_pair(nli: PairClassifier) -> None:
    pairs = [
        ("A short premise.", "A short claim."),
        ("The meeting moved from Tuesday to Thursday at ten in the morning.", "The meeting is on Thursday."),
        ("x " * 50, "y"),
    ]
    alone = np.array([list(nli.run([p])[0].probs.values()) for p in pairs])
    together = np.array([list(r.probs.values()) for r in nli.run(pairs)])
    assert np.allclose(alone, together, atol=1e-4)


def test_a_pair_over_max_length_is_cut_and_flagged(nli: PairClassifier) -> None:
    long = "word " * 600
    assert nli.run([(long, "claim")])[0].truncated and not nli.run([("short", "claim")])[0].truncated


async def test_pairs_go_through_the_micro_batcher(nli: PairClassifier) -> None:
    async with MicroBatcher(nli.run, max_batch_size=8, warmup_item="warm-up", name="nli") as b:
        res = await b.submit_many([("The sky is blue.", "The sky is blue.")] * 5)
    assert [r.label for r in res] == ["entailment"] * 5


def test_metadata_records_per_class_accuracy_on_held_out_sets(nli: PairClassifier) -> None:
    ev = nli.metadata.extra["evaluation"]
    for split in ("test", "check"):
        assert set(ev[split]) >= {"n", "accuracy", "entailment", "neutral", "contradiction"}
        assert all(0 <= ev[split][lab]["accuracy"] <= 1 for lab in nli.labels)
    assert ev["check"]["n"] == 48 and nli.metadata.extra["training"]["held_out_countries"]


def test_contradiction_edits_change_meaning() -> None:
    rng = random.Random(0)
    assert _contradict("The tower is 330 metres tall.", rng) not in (None, "The tower is 330 metres tall.")
    assert _contradict("The library is open on Sundays.", random.Random(1)) == "The library is not open on Sundays."
    assert _contradict("Nothing to edit here.", rng) is None
