"""Selection among a decision's modelRefs (router/decisions/selection): each algorithm on fixed inputs,
weighted draws within statistical bounds, latency statistics from observed calls, and the config
checks that refuse what an algorithm cannot use."""

from __future__ import annotations

import copy
import math
import random
from typing import Any

import pytest

from router.config import ConfigError, parse_config
from router.decisions.selection.observed import Observations
from router.decisions.selection.registry import SELECTIONS
from router.decisions.selection.spec import Candidate, SelectContext
from router.looper.base import ModelFacts

PRICES = {"cheap": (0.1, 0.4), "mid": (1.0, 2.0), "dear": (5.0, 15.0), "free": (0.0, 0.0)}


def facts(name: str) -> ModelFacts:
    inp, out = PRICES.get(name, (None, None))
    return ModelFacts(name, None, inp, out)


def ctx(
    models: list[tuple[str, float]] | list[str],
    *,
    observed: Observations | None = None,
    prompt: int = 1000,
    completion: int | None = None,
    seed: int = 7,
) -> SelectContext:
    cands = tuple(Candidate(m, 1.0) if isinstance(m, str) else Candidate(*m) for m in models)
    return SelectContext("d", cands, facts, observed or Observations(), lambda: (prompt, completion), random.Random(seed))


def select(algorithm: str, c: SelectContext, **settings: Any):
    spec = SELECTIONS[algorithm]
    return spec.select(spec.settings(**settings), c)


def test_registry_names_follow_the_reference():
    assert list(SELECTIONS) == ["static", "weighted", "cost_aware", "latency_aware"]


def test_static_takes_the_first_modelref():
    s = select("static", ctx(["b", "a", "c"]))
    assert (s.model, s.algorithm) == ("b", "static") and "first modelRef" in s.reason


@pytest.mark.parametrize(("weights", "draws"), [((3.0, 1.0), 20000), ((1.0, 1.0, 2.0), 20000), ((0.2, 0.0, 0.8), 10000)])
def test_weighted_draws_follow_the_weights(weights, draws):
    names = [f"m{i}" for i in range(len(weights))]
    c = ctx(list(zip(names, weights)), seed=12345)
    counts = dict.fromkeys(names, 0)
    for _ in range(draws):
        counts[select("weighted", c).model] += 1
    total = sum(weights)
    for name, w in zip(names, weights):
        p = w / total
        sd = math.sqrt(draws * p * (1 - p))
        # 5 standard deviations: a correct sampler essentially never lands outside; a wrong share
        # (uniform draws, the first model always, zero weight drawn) lands far outside.
        assert abs(counts[name] - draws * p) <= 5 * sd + 1e-9, (name, counts)
    assert counts.get("m1", 0) == 0 or weights[1] > 0


def test_weighted_reason_and_scores():
    s = select("weighted", ctx([("a", 3.0), ("b", 1.0)], seed=1))
    assert s.algorithm == "weighted" and s.scores == {"a": 3.0, "b": 1.0} and "of 4" in s.reason


def test_weighted_with_only_zero_weights_left_takes_the_first():
    s = select("weighted", ctx([("a", 0.0), ("b", 0.0)]))
    assert s.model == "a" and "weight 0" in s.reason


def test_cost_aware_picks_the_cheapest_for_this_request():
    # 1000 prompt tokens, 256 completion: cheap 0.0001+0.0001024, mid 0.001+0.000512, dear 0.005+0.00384
    s = select("cost_aware", ctx(["dear", "mid", "cheap"]))
    assert s.model == "cheap" and s.scores["dear"] == pytest.approx((1000 * 5.0 + 256 * 15.0) / 1e6)
    assert s.scores["cheap"] == pytest.approx((1000 * 0.1 + 256 * 0.4) / 1e6)


def test_cost_aware_uses_the_requests_completion_cap_and_keeps_declared_order_on_ties():
    s = select("cost_aware", ctx(["mid", "cheap"], completion=4000))
    assert s.scores["mid"] == pytest.approx((1000 * 1.0 + 4000 * 2.0) / 1e6) and s.model == "cheap"
    assert select("cost_aware", ctx(["free", "cheap", "free2"])).model == "free"
    # A different completion estimate changes which is cheaper when prompt and completion prices cross.
    PRICES.update({"promptheavy": (3.0, 0.1), "outputheavy": (0.1, 3.0)})
    try:
        assert select("cost_aware", ctx(["promptheavy", "outputheavy"], prompt=2000, completion=10)).model == "outputheavy"
        assert select("cost_aware", ctx(["promptheavy", "outputheavy"], prompt=10, completion=2000)).model == "promptheavy"
        assert select("cost_aware", ctx(["promptheavy", "outputheavy"], prompt=10), completion_tokens=2000).model == "promptheavy"
    finally:
        del PRICES["promptheavy"], PRICES["outputheavy"]


def observe(
    obs: Observations, model: str, *, latency: float, ttft: float | None = None, tokens: int = 10, n: int = 5, outcome: str = "ok"
) -> None:
    for _ in range(n):
        obs.observe(model, outcome, latency, ttft, tokens)


def test_observations_ewma_and_percentiles():
    obs = Observations()
    for v in (1.0, 2.0, 3.0):
        obs.observe("m", "ok", v, None, 10)
    st = obs.get("m")
    assert st is not None
    # EWMA with alpha 0.3: 1 → 1.3 → 1.81
    assert st.ewma["latency"] == pytest.approx(1.81) and st.ewma["tpot"] == pytest.approx(0.181)
    assert "ttft" not in st.ewma  # never streamed
    obs.observe("m", "ok", 1.0, 0.2, 5)
    assert st.ewma["ttft"] == pytest.approx(0.2) and st.windows["tpot"][-1] == pytest.approx(0.8 / 4)
    assert st.percentile("latency", 50) == 1.0 and st.percentile("latency", 100) == 3.0
    obs.observe("m", "cancelled", 99.0, None, 0)  # a cancelled straggler says nothing about the model
    assert st.calls == 4 and st.error_rate == 0.0
    obs.observe("m", "timeout", 30.0, None, 0)
    assert st.error_rate == pytest.approx(0.3) and st.calls == 5 and st.samples["latency"] == 4


def test_latency_aware_picks_the_fastest_observed():
    obs = Observations()
    observe(obs, "slow", latency=2.0, ttft=0.5, tokens=20)
    observe(obs, "fast", latency=0.5, ttft=0.1, tokens=20)
    s = select("latency_aware", ctx(["slow", "fast"], observed=obs))
    assert s.model == "fast" and s.scores["fast"] == pytest.approx(1.0) and s.scores["slow"] > 3
    assert "ttft ewma" in s.reason and "tpot ewma" in s.reason


def test_latency_aware_without_data_takes_the_first_and_skips_thin_or_failing_models():
    obs = Observations()
    assert select("latency_aware", ctx(["a", "b"], observed=obs)).reason.startswith("no latency observations")
    observe(obs, "b", latency=0.1, n=2)  # below min_samples
    observe(obs, "c", latency=1.0)
    s = select("latency_aware", ctx(["a", "b", "c"], observed=obs))
    assert s.model == "c" and set(s.scores) == {"c"}
    observe(obs, "d", latency=0.01, n=3)
    observe(obs, "d", latency=0.0, outcome="http_503", n=4)
    s = select("latency_aware", ctx(["c", "d"], observed=obs))
    assert s.model == "c" and "failing passed over" in s.reason
    assert select("latency_aware", ctx(["c", "d"], observed=obs), min_samples=10).reason.startswith("no latency")


def test_latency_aware_compares_only_metrics_every_candidate_has():
    obs = Observations()
    observe(obs, "streamed", latency=1.0, ttft=0.05, tokens=10)  # tpot (1-0.05)/9 ≈ 0.105
    observe(obs, "whole", latency=0.6, tokens=10)  # no ttft; tpot 0.06
    s = select("latency_aware", ctx(["streamed", "whole"], observed=obs))
    assert s.model == "whole" and "ttft" not in s.reason and "tpot ewma" in s.reason


def test_latency_aware_percentiles_use_the_window():
    obs = Observations()
    for v in (0.1, 0.1, 0.1, 0.1, 5.0):  # one very slow first token
        obs.observe("spiky", "ok", v + 1.0, v, 11)
    for v in (0.3,) * 5:
        obs.observe("steady", "ok", v + 1.0, v, 11)
    assert select("latency_aware", ctx(["spiky", "steady"], observed=obs), ttft_percentile=50).model == "spiky"
    s = select("latency_aware", ctx(["spiky", "steady"], observed=obs), ttft_percentile=95)
    assert s.model == "steady" and "ttft p95" in s.reason and "tpot" not in s.reason


# --------------------------------------------------------------------------- config


BASE: dict[str, Any] = {
    "backends": [{"name": "b", "endpoint": "http://127.0.0.1:1"}],
    "models": [
        {"name": "a", "backend": "b", "pricing": {"prompt_per_1m": 1, "completion_per_1m": 2}},
        {"name": "c", "backend": "b"},
    ],
}


def with_decision(**decision: Any) -> dict[str, Any]:
    return {
        **copy.deepcopy(BASE),
        "routing": {"decisions": [{"name": "d", "modelRefs": [{"model": "a"}, {"model": "c"}], **decision}]},
    }


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    return err.value.problems


def test_every_algorithm_loads_with_its_block():
    for name in SELECTIONS:
        algo = {"type": name, name: {}} if name != "cost_aware" else {"type": name}
        data = with_decision(algorithm=algo)
        if name == "cost_aware":
            data["models"][1]["pricing"] = {"prompt_per_1m": 0.5}
        cfg = parse_config(data)
        assert cfg.routing.decisions[0].algorithm.type == name and not cfg.routing.decisions[0].is_looper


def test_weights_of_zero_everywhere_are_refused_for_weighted():
    data = with_decision(algorithm={"type": "weighted"})
    data["routing"]["decisions"][0]["modelRefs"] = [{"model": "a", "weight": 0}, {"model": "c", "weight": 0}]
    assert problems(data) == [
        "routing.decisions[0].modelRefs: weighted selection needs at least one modelRef with weight > 0 (every weight is 0)"
    ]
    data["routing"]["decisions"][0]["modelRefs"][1]["weight"] = -1
    assert any("modelRefs.1.weight" in p or "modelRefs[1].weight" in p for p in problems(data))


def test_cost_aware_needs_a_price_for_every_candidate():
    msg = problems(with_decision(algorithm={"type": "cost_aware"}))
    assert msg == [
        (
            "routing.decisions[0].modelRefs[1].model: cost_aware selection needs a price for 'c': set models[1].pricing "
            "(prompt_per_1m, completion_per_1m)"
        )
    ]
    data = with_decision(algorithm={"type": "cost_aware"})
    data["models"][1]["pricing"] = {"prompt_per_1m": -1}
    assert any("models[1].pricing.prompt_per_1m" in p for p in problems(data))
    data["models"][1]["pricing"] = {"prompt_per_1m": 1, "currency": "EUR"}
    assert any("different currencies" in p for p in problems(data))


def test_latency_aware_percentiles_are_bounded():
    msgs = problems(with_decision(algorithm={"type": "latency_aware", "latency_aware": {"ttft_percentile": 0}}))
    assert any("algorithm.latency_aware.ttft_percentile" in p for p in msgs)


def test_reference_latency_aware_fragment_loads():
    cfg = parse_config(
        with_decision(algorithm={"type": "latency_aware", "latency_aware": {"tpot_percentile": 90, "ttft_percentile": 95}})
    )
    settings = cfg.routing.decisions[0].selection_settings
    assert (settings.tpot_percentile, settings.ttft_percentile) == (90, 95)
