"""The CI-sized hostile-input run: the seeded corpus through a real Envoy + router + simulated
backends, one test per category so a failure names what broke.

Sizes: ``FUZZ_CASES`` (default 300), ``FUZZ_SEED`` (default 1), ``FUZZ_PROFILE`` (``ci``; ``full``
goes up to the body limit). ``FUZZ_REPORT=/path.json`` keeps the full report. One failing case re-runs
alone with ``bench/fuzz.py --seed <seed> --only <case id> -v``.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz import corpus, upstream
from tests.fuzz import hostile as T
from tests.fuzz.corpus import Builder, Case, chat, user
from tests.fuzz.invariants import Violation
from tests.fuzz.runner import (
    Report,
    Target,
    default_sims,
    down_checks,
    load_default_config,
    new_report,
    run_case,
    run_cases,
)

CASES = int(os.environ.get("FUZZ_CASES", "300"))
SEED = int(os.environ.get("FUZZ_SEED", "1"))
PROFILE = os.environ.get("FUZZ_PROFILE", "ci")
GROWTH_MB = float(os.environ.get("FUZZ_RSS_GROWTH_MB", "512"))
KILL_MB = float(os.environ.get("FUZZ_RSS_KILL_MB", "3072"))


def explain(violations: list[Violation], limit: int = 25) -> str:
    lines = [f"{len(violations)} invariant violation(s):"]
    for v in violations[:limit]:
        lines.append(f"  {v.case_id} [{v.variant}] {v.invariant}: {v.detail} | got {v.status} {v.body[:140]!r}")
    if len(violations) > limit:
        lines.append(f"  ... {len(violations) - limit} more")
    lines.append(f"re-run one: .venv/bin/python bench/fuzz.py --seed {SEED} --only <case id> -v")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the corpus itself (no stack)


def test_corpus_is_seeded_and_covers_every_category() -> None:
    a = corpus.generate(SEED, 120)
    b = corpus.generate(SEED, 120)
    assert [c.request for c in a] == [c.request for c in b]
    assert [c.request for c in corpus.generate(SEED + 1, 120)] != [c.request for c in a]
    assert {c.category for c in a} == set(corpus.CATEGORIES)
    assert all(c.expect for c in a) and len({c.id for c in a}) == len(a)


def test_hostile_material_is_found_wherever_it_hides() -> None:
    rng = random.Random(0)
    for card in T.CARDS:
        body = {"messages": [{"role": "system", "content": f"x {card.replace(' ', '-')} y"}]}
        assert T.found_in(card, body)
    assert T.found_in(T.JAILBREAKS[0], {"a": [{"b": T.JAILBREAKS[0].upper()}]})
    assert not T.found_in(T.CARDS[0], {"messages": [{"content": "[CREDIT_CARD]"}]})
    assert not T.found_in("jane.doe@example.com", {"m": "[EMAIL]"})
    for placement in corpus.PLACEMENTS:
        body = corpus.place_text(T.JAILBREAKS[1], placement, rng, "What is the capital of France?")
        assert T.found_in(T.JAILBREAKS[1], body), placement


# --------------------------------------------------------------------------- through the real stack


def _controls() -> list[Case]:
    """Each phrase alone as the only user message: the guards must refuse it (else the corpus is wrong)."""
    out = []
    for i, phrase in enumerate(T.JAILBREAKS):
        out.append(
            Builder(f"control-jailbreak-{i}", "control", "jailbreak alone").json_case(
                chat([user(phrase)]), {403}, leaks=(("jailbreak", phrase),)
            )
        )
    for i, card in enumerate(T.CARDS):
        out.append(
            Builder(f"control-card-{i}", "control", "card alone").json_case(
                chat([user(f"Charge my card {card} for the hotel")]), {422}, leaks=(("card", card),)
            )
        )
    return out


@pytest.fixture(scope="module")
def fuzz_report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Report, Report]]:
    workroot = tmp_path_factory.mktemp("fuzz")
    controls = new_report(SEED, PROFILE, "FULL_DUPLEX_STREAMED", GROWTH_MB)
    report = new_report(SEED, PROFILE, "FULL_DUPLEX_STREAMED", GROWTH_MB)
    target = Target(workroot, load_default_config(), default_sims(), rss_kill_mb=KILL_MB)
    started = time.monotonic()
    try:
        target.start()
        report.baseline_mb = controls.baseline_mb = target.baseline_mb
        for case in _controls():
            controls.results.append(run_case(target, case, GROWTH_MB))
        run_cases(target, corpus.generate(SEED, CASES, PROFILE), report, GROWTH_MB)  # type: ignore[arg-type]
        report.extra += down_checks(target)
    finally:
        target.stop()
    report.wall_s = time.monotonic() - started
    path = os.environ.get("FUZZ_REPORT")
    out = Path(path) if path else workroot / "fuzz-report.json"
    out.write_text(json.dumps(report.as_dict(), indent=2))
    print(f"\nfuzz report: {out}")
    yield controls, report


@pytest.mark.envoy
@pytest.mark.models
def test_controls_are_refused_alone(fuzz_report: tuple[Report, Report]) -> None:
    controls, _ = fuzz_report
    assert not controls.violations, explain(controls.violations)


@pytest.mark.envoy
@pytest.mark.models
@pytest.mark.parametrize("category", list(corpus.CATEGORIES))
def test_fuzz_category(fuzz_report: tuple[Report, Report], category: str) -> None:
    _, report = fuzz_report
    ran = [r for r in report.results if r.case.category == category]
    assert ran, f"no {category} case in the first {CASES}"
    bad = [v for v in report.violations if v.category == category]
    assert not bad, explain(bad)


@pytest.mark.envoy
@pytest.mark.parametrize("what", ["backend_down", "router_down"])
def test_envoy_answers_are_openai_shaped_when_parts_are_down(fuzz_report: tuple[Report, Report], what: str) -> None:
    _, report = fuzz_report
    bad = [v for v in report.extra if v.category == what]
    assert not bad, explain(bad)


# --------------------------------------------------------------------------- Fusion vs a misbehaving backend


@pytest.fixture(scope="module")
def upstream_results(tmp_path_factory: pytest.TempPathFactory) -> list:
    return upstream.run(tmp_path_factory.mktemp("fuzz-upstream"), KILL_MB, GROWTH_MB, every_combination=PROFILE == "full")


@pytest.mark.envoy
@pytest.mark.models
@pytest.mark.parametrize("stage", upstream.STAGES)
def test_fusion_survives_a_misbehaving_backend(upstream_results: list, stage: str) -> None:
    ran = [r for r in upstream_results if r.case.variant.startswith(stage + "/")]
    assert ran
    bad = [v for r in ran for v in r.violations]
    assert not bad, explain(bad)
