"""Every looper algorithm in-process, against the simulator in direct mode (no Envoy): the pipeline's
entry paths, escalation, rounds, the adaptive gate, quorum and stage budgets, streaming, failures and
cancellation — proven by what the simulated backends saw. Seconds, not full stacks."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from router.actions import Respond, Stream
from router.app import App
from router.config import parse_config
from router.extproc.pipeline import handle
from router.looper.confidence import escalation_order
from router.looper.registry import ALGORITHMS
from router.looper.remom import compact, distribute
from router.looper.scoring import from_logprobs, margin, parse_verdict
from router.openai.upstream import TokenLogprob, TopLogprob
from router.sim import SimBackendSpec, running_backends
from router.state import RequestState

SIMS = {
    "small": {"confidence": 0.3},
    "medium": {"confidence": 0.5},
    "large": {"confidence": 0.95},
    "sure": {"confidence": 0.97},
    "nolp": {"logprobs": False, "confidence": 0.9},
    "down": {"mode": "error", "fail_status": 503},
    "hang": {"mode": "hang"},
    "judge": {"mode": "judge_json"},
}


def config(ports: dict[str, int], decisions: list[dict[str, Any]], **looper: Any) -> dict[str, Any]:
    return {
        "global": {"integrations": {"looper": {"timeout_seconds": 10, **looper}}},
        "backends": [{"name": f"b-{n}", "endpoint": f"http://127.0.0.1:{p}"} for n, p in ports.items()],
        "models": [
            {"name": n, "backend": f"b-{n}", "param_size": size}
            for n, size in zip(ports, ("0.1b", "1b", "8b", "70b", "3b", "2b", "1b", "30b"))
        ],
        "default_model": "small",
        "routing": {
            "signals": {"keywords": [{"name": kw, "keywords": [kw]} for kw in ("escalate", "rounds", "gated", "fused")]},
            "decisions": decisions,
        },
    }


@pytest.fixture
async def sims() -> AsyncIterator[dict[str, Any]]:
    specs = [SimBackendSpec(name=f"b-{n}", models=[n], **knobs) for n, knobs in SIMS.items()]
    async with running_backends(specs) as backends:
        yield {b.name.removeprefix("b-"): b for b in backends}


def ports(sims: dict[str, Any]) -> dict[str, int]:
    return {name: b.port for name, b in sims.items()}


async def ask(app: App, text: str, model: str = "auto", **body: Any) -> tuple[RequestState, Respond | Stream]:
    raw = {"model": model, "messages": [{"role": "user", "content": text}], **body}
    state = RequestState(policy=app.policy, body=bytearray(orjson.dumps(raw)))
    return state, await handle(app, state)


async def drain(action: Stream) -> list[bytes]:
    out = [chunk async for chunk in action.chunks]
    return out


def events(chunks: list[bytes]) -> list[Any]:
    lines = [line[6:] for c in chunks for line in c.decode().splitlines() if line.startswith("data: ")]
    return [line if line == "[DONE]" else orjson.loads(line) for line in lines]


def confidence_decision(**settings: Any) -> dict[str, Any]:
    return {
        "name": "cascade",
        "priority": 10,
        "rules": {"type": "keyword", "name": "escalate"},
        "modelRefs": [{"model": "large"}, {"model": "small"}, {"model": "medium"}],
        "algorithm": {"type": "confidence", "confidence": {"threshold": 0.9, **settings}},
    }


# --------------------------------------------------------------------------- confidence math


def tok(p: float, alt: float | None = None) -> TokenLogprob:
    tops = [TopLogprob(token="a", logprob=math.log(p))] + ([TopLogprob(token="b", logprob=math.log(alt))] if alt else [])
    return TokenLogprob(token="a", logprob=math.log(p), top_logprobs=tops)


def test_avg_logprob_is_the_geometric_mean_probability():
    score = from_logprobs([tok(0.9), tok(0.4)], "avg_logprob")
    assert score.value == pytest.approx(math.sqrt(0.9 * 0.4)) and score.tokens == 2


def test_margin_is_the_mean_top1_minus_top2_gap():
    assert margin([tok(0.7, 0.2), tok(0.5, 0.5)]) == pytest.approx((0.5 + 0.0) / 2)
    assert margin([tok(0.7)]) == pytest.approx(0.7)  # one alternative known: the runner-up is 0
    assert from_logprobs([TokenLogprob(token="a", logprob=-0.1)], "margin").value is None  # no top_logprobs: no evidence


def test_hybrid_mixes_by_weight():
    toks = [tok(0.8, 0.1)]
    assert from_logprobs(toks, "hybrid", 0.25).value == pytest.approx(0.25 * 0.8 + 0.75 * 0.7)


def test_no_logprobs_is_no_evidence_not_zero():
    assert from_logprobs(None, "hybrid").value is None and from_logprobs([], "avg_logprob").reason == "no_logprobs"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"confidence": 0.83, "reason": "ok"}', 0.83),
        ('Sure! {"confidence": 1.7}', 1.0),
        ("I'd say 0.4", 0.4),
        ("no idea", None),
    ],
)
def test_self_verification_verdicts(text, value):
    got = parse_verdict(text).value
    assert got == (pytest.approx(value) if value is not None else None)


def test_escalation_orders():
    class Facts:
        def __init__(self, size: float | None, price: float | None):
            self.param_size, self.input_price, self.output_price = size, price, price

    facts = {"a": Facts(70, 5.0), "b": Facts(8, None), "c": Facts(None, 1.0), "d": Facts(1, 0.1)}.__getitem__
    assert escalation_order(["a", "b", "c", "d"], "declared", facts) == ["a", "b", "c", "d"]
    assert escalation_order(["a", "b", "c", "d"], "small_to_large", facts) == ["d", "b", "a", "c"]  # unknown size last
    assert escalation_order(["a", "b", "c", "d"], "cost", facts) == ["d", "c", "a", "b"]


# --------------------------------------------------------------------------- remom schedule


def test_distribution_strategies():
    assert distribute(["a", "b"], 5, "round_robin") == ["a", "b", "a", "b", "a"]
    assert distribute(["a", "b"], 3, "first_only") == ["a", "a", "a"]
    assert distribute(["a", "b", "c"], 5, "equal") == ["a", "a", "b", "b", "c"]
    assert distribute(["a", "b"], 4, "weighted", {"a": 3.0, "b": 1.0}) == ["a", "a", "a", "b"]


def test_compaction_keeps_the_conclusion():
    text = " ".join(f"w{i}" for i in range(100))
    assert compact(text, "full", 8) == text
    assert compact(text, "last_n_tokens", 8) == "… w94 w95 w96 w97 w98 w99"


# --------------------------------------------------------------------------- registry


def test_every_algorithm_is_reachable_from_schema_slugs_and_plugins():
    from router.config.schema import Algorithm, LooperIntegration

    union = {m.model_fields["type"].annotation.__args__[0] for m in Algorithm.__origin__.__args__}  # type: ignore[attr-defined]
    assert {"static", *ALGORITHMS} <= union  # (the rest are model-selection algorithms for routing decisions)
    slugs = LooperIntegration()
    for name, spec in ALGORITHMS.items():
        assert slugs.slugs(name) == list(spec.default_slugs)
        assert spec.looper.name == name and spec.plugin_ids
        assert spec.trace.model_fields["algorithm"] and issubclass(spec.trace, ALGORITHMS["fusion"].trace.__mro__[1])


# --------------------------------------------------------------------------- confidence end to end


async def test_confidence_escalates_until_an_answer_clears_the_threshold(sims):
    app = App.from_config(parse_config(config(ports(sims), [confidence_decision()])))
    _, action = await ask(app, "escalate please")
    body = orjson.loads(action.body)
    trace = body["confidence"]
    assert trace["escalation_order"] == ["small", "medium", "large"]  # by declared size, not file order
    assert [(a["model"], a["accepted"], a["reason"]) for a in trace["attempts"]] == [
        ("small", False, "below_threshold"),
        ("medium", False, "below_threshold"),
        ("large", True, "above_threshold"),
    ]
    assert trace["attempts"][0]["confidence"] == pytest.approx(0.3, abs=1e-3)
    assert trace["accepted_model"] == "large" and trace["outcome"] == "accepted"
    assert body["choices"][0]["message"]["content"].startswith("[large@b-large]")
    assert body["usage"]["total_tokens"] == sum(a["usage"]["total_tokens"] for a in trace["attempts"])
    assert action.headers["x-vsr-selected-model"] == "large" and action.headers["x-vsr-looper-outcome"] == "accepted"
    # every tier was asked for logprobs
    assert all(
        r["body"]["logprobs"] is True and r["body"]["top_logprobs"] == 2
        for n in ("small", "medium", "large")
        for r in sims[n].requests
    )
    await app.close()


async def test_confidence_returns_the_last_answer_when_none_clears(sims):
    app = App.from_config(parse_config(config(ports(sims), [confidence_decision(threshold=0.99)])))
    _, action = await ask(app, "escalate please")
    trace = orjson.loads(action.body)["confidence"]
    assert trace["outcome"] == "exhausted" and trace["accepted_model"] == "large"
    assert not any(a["accepted"] for a in trace["attempts"])
    await app.close()


async def test_a_tier_that_is_down_is_skipped_or_fails_the_run(sims):
    decision = confidence_decision()
    decision["modelRefs"] = [{"model": "down"}, {"model": "large"}]
    decision["algorithm"]["confidence"]["escalation_order"] = "declared"
    app = App.from_config(parse_config(config(ports(sims), [decision])))
    _, action = await ask(app, "escalate")
    trace = orjson.loads(action.body)["confidence"]
    assert [a["reason"] for a in trace["attempts"]] == ["failed:http_503", "above_threshold"]
    assert trace["failed_models"][0] == {
        "model": "down",
        "stage": "tier1",
        "reason": "http_503",
        "error": trace["failed_models"][0]["error"],
    }
    decision["algorithm"]["confidence"]["on_error"] = "fail"
    app2 = App.from_config(parse_config(config(ports(sims), [decision])))
    _, action = await ask(app2, "escalate")
    body = orjson.loads(action.body)
    assert action.status == 502 and body["error"]["code"] == "tier_failed" and "down" in body["error"]["message"]
    assert body["confidence"]["attempts"][0]["model"] == "down"
    await app.close()
    await app2.close()


async def test_every_tier_down_is_a_502_with_the_trace(sims):
    decision = confidence_decision()
    decision["modelRefs"] = [{"model": "down"}, {"model": "down"}]
    app = App.from_config(parse_config(config(ports(sims), [decision])))
    _, action = await ask(app, "escalate")
    body = orjson.loads(action.body)
    assert action.status == 502 and body["error"]["code"] == "all_tiers_failed" and len(body["confidence"]["attempts"]) == 2
    await app.close()


async def test_no_logprobs_falls_back_to_self_verification_and_says_so(sims):
    decision = confidence_decision()
    decision["modelRefs"] = [{"model": "nolp"}, {"model": "large"}]
    decision["algorithm"]["confidence"]["escalation_order"] = "declared"
    decision["algorithm"]["confidence"]["threshold"] = 0.85
    app = App.from_config(parse_config(config(ports(sims), [decision])))
    _, action = await ask(app, "escalate")
    trace = orjson.loads(action.body)["confidence"]
    [first] = trace["attempts"]
    assert first["model"] == "nolp" and first["accepted"] and first["method"] == "self_verify"
    assert first["confidence"] == pytest.approx(0.9)
    assert trace["usage"]["verify:nolp"]["total_tokens"] > 0  # the verification call is accounted
    assert trace["iterations"] == 2
    await app.close()


async def test_confidence_streams_progress_then_the_accepted_answer(sims):
    app = App.from_config(parse_config(config(ports(sims), [confidence_decision()])))
    _, action = await ask(app, "escalate", stream=True, stream_options={"include_usage": True})
    assert isinstance(action, Stream)
    chunks = await drain(action)
    text = b"".join(chunks)
    assert b": confidence: tier 1/3: small" in text and b"below threshold" in text
    evs = events(chunks)
    assert evs[-1] == "[DONE]"
    content = "".join(e["choices"][0]["delta"].get("content") or "" for e in evs[:-1] if e.get("choices"))
    assert content.startswith("[large@b-large]")
    finish = next(e for e in evs[:-1] if e.get("choices") and e["choices"][0].get("finish_reason"))
    assert finish["confidence"]["accepted_model"] == "large"
    assert evs[-2]["usage"]["total_tokens"] > 0
    await app.close()


# --------------------------------------------------------------------------- remom end to end


def remom_decision(**settings: Any) -> dict[str, Any]:
    return {
        "name": "rounds",
        "priority": 10,
        "rules": {"type": "keyword", "name": "rounds"},
        "modelRefs": [{"model": "small"}, {"model": "medium"}],
        "algorithm": {"type": "remom", "remom": {"breadth_schedule": [3, 2], "include_intermediate_responses": True, **settings}},
    }


async def test_remom_rounds_see_the_previous_round_then_synthesize(sims):
    app = App.from_config(parse_config(config(ports(sims), [remom_decision(synthesis_model="large")])))
    _, action = await ask(app, "rounds please")
    body = orjson.loads(action.body)
    trace = body["remom"]
    assert [r["models"] for r in trace["rounds"]] == [["small", "medium", "small"], ["small", "medium"]]
    assert [r["answered"] for r in trace["rounds"]] == [3, 2]
    assert trace["iterations"] == 6 and trace["synthesis_model"] == "large"
    assert body["choices"][0]["message"]["content"].startswith("[large@b-large]")
    small = sims["small"].requests
    round2 = [r for r in small if "Other models answered" in orjson.dumps(r["body"]).decode()]
    assert len(round2) == 1 and "[answer 1]" in round2[0]["body"]["messages"][-1]["content"]
    [synthesis] = sims["large"].requests
    assert "Latest answers" in synthesis["body"]["messages"][0]["content"]
    await app.close()


async def test_remom_streams_the_synthesis_live(sims):
    app = App.from_config(parse_config(config(ports(sims), [remom_decision(synthesis_model="large")])))
    _, action = await ask(app, "rounds", stream=True)
    chunks = await drain(action)
    evs = events(chunks)
    assert evs[-1] == "[DONE]"
    deltas = [e for e in evs[:-1] if e.get("choices") and e["choices"][0]["delta"].get("content")]
    assert len(deltas) > 3  # token by token, not one buffered chunk
    [synthesis] = sims["large"].requests
    assert synthesis["body"]["stream"] is True
    await app.close()


async def test_a_remom_round_past_its_timeout_is_recorded_and_the_run_goes_on(sims):
    decision = remom_decision(round_timeout_seconds=0.5, synthesis_model="large", breadth_schedule=[2])
    decision["modelRefs"] = [{"model": "small"}, {"model": "hang"}]
    app = App.from_config(parse_config(config(ports(sims), [decision])))
    _, action = await ask(app, "rounds")
    trace = orjson.loads(action.body)["remom"]
    assert trace["rounds"][0]["answered"] == 1 and trace["rounds"][0]["failed"] == 1
    assert trace["failed_models"][0]["model"] == "hang" and trace["failed_models"][0]["reason"] == "timeout"
    assert trace["outcome"] == "synthesized"
    await app.close()


async def test_remom_with_every_round_call_down_is_a_502(sims):
    decision = remom_decision(breadth_schedule=[2])
    decision["modelRefs"] = [{"model": "down"}]
    app = App.from_config(parse_config(config(ports(sims), [decision])))
    _, action = await ask(app, "rounds")
    body = orjson.loads(action.body)
    assert action.status == 502 and body["error"]["code"] == "all_rounds_failed" and body["remom"]["rounds"][0]["failed"] == 2
    await app.close()


# --------------------------------------------------------------------------- adaptive Fusion


def gated_decision(gate_model: str, **gate: Any) -> dict[str, Any]:
    return {
        "name": "adaptive",
        "priority": 10,
        "rules": {"type": "keyword", "name": "gated"},
        "algorithm": {
            "type": "fusion",
            "fusion": {
                "model": "judge",
                "analysis_models": [gate_model, "large"],
                "gate": {"model": gate_model, "threshold": 0.9, **gate},
            },
        },
    }


async def test_a_confident_gate_answers_alone(sims):
    app = App.from_config(parse_config(config(ports(sims), [gated_decision("sure")])))
    _, action = await ask(app, "gated question")
    body = orjson.loads(action.body)
    trace = body["fusion"]
    assert trace["outcome"] == "gated" and trace["iterations"] == 1
    assert (
        trace["gate"]["passed"]
        and trace["gate"]["calls_saved"] == 3
        and trace["gate"]["confidence"] == pytest.approx(0.97, abs=1e-3)
    )
    assert body["choices"][0]["message"]["content"].startswith("[sure@b-sure]")
    assert not sims["large"].requests and not sims["judge"].requests
    assert action.headers["x-vsr-looper-outcome"] == "gated"
    await app.close()


async def test_an_unsure_gate_runs_the_panel_and_its_answer_is_reused(sims):
    app = App.from_config(parse_config(config(ports(sims), [gated_decision("small")])))
    _, action = await ask(app, "gated question")
    trace = orjson.loads(action.body)["fusion"]
    assert trace["outcome"] == "fused" and not trace["gate"]["passed"]
    assert [r["model"] for r in trace["responses"]] == ["small", "large"]
    assert trace["responses"][0]["from_gate"] is True
    assert len(sims["small"].requests) == 1  # the gate's answer stood in for the panel member's
    assert trace["iterations"] == 4  # gate + one more panel member + judge + synthesis
    await app.close()


# --------------------------------------------------------------------------- entry paths, bad input


@pytest.mark.parametrize(
    ("model", "plugin"),
    [
        ("vllm-sr/confidence", None),
        ("auto", None),
        ("small", {"id": "confidence", "models": ["small", "large"], "threshold": 0.9}),
    ],
)
async def test_confidence_on_every_entry_path(sims, model, plugin):
    app = App.from_config(parse_config(config(ports(sims), [confidence_decision()])))
    extra = {"plugins": [plugin]} if plugin else {}
    state, action = await ask(app, "escalate now", model=model, **extra)
    body = orjson.loads(action.body)
    assert action.status == 200 and body["confidence"]["accepted_model"] == "large"
    assert state.path_label == "confidence"
    assert body["confidence"]["decision"] == ("confidence_direct" if plugin else "cascade")
    await app.close()


async def test_a_slug_without_a_matching_decision_never_falls_back(sims):
    app = App.from_config(parse_config(config(ports(sims), [remom_decision()])))
    _, action = await ask(app, "nothing relevant", model="vllm-sr/remom")
    body = orjson.loads(action.body)
    assert action.status == 404 and body["error"]["code"] == "no_remom_decision_matched"
    await app.close()


async def test_a_looper_decision_without_model_refs_never_crashes(sims):
    decision = remom_decision()
    decision["modelRefs"] = []
    with pytest.raises(Exception) as info:
        parse_config(config(ports(sims), [decision]))
    assert "modelRefs: a ReMoM decision needs candidate models" in str(info.value)


@pytest.mark.parametrize(
    ("algorithm", "problem"),
    [
        ({"type": "bogus"}, "algorithm"),
        ({"type": "remom", "remom": {"breadth_schedule": []}}, "breadth_schedule"),
        ({"type": "confidence", "confidence": {"threshold": 1.5}}, "threshold"),
        ({"type": "confidence", "confidence": {"threshold": 0}}, "threshold"),
        (
            {"type": "confidence", "confidence": {"hybrid_weights": {"logprob_weight": 0.7, "margin_weight": 0.7}}},
            "hybrid_weights",
        ),
        ({"type": "confidence", "confidence": {"confidence_method": "automix_entailment"}}, "not supported"),
    ],
)
def test_bad_looper_settings_are_config_errors_naming_the_field(sims, algorithm, problem):
    decision = confidence_decision()
    decision["algorithm"] = algorithm
    with pytest.raises(Exception) as info:
        parse_config(config(ports(sims), [decision]))
    assert "routing.decisions[0].algorithm" in str(info.value) and problem in str(info.value)


def test_a_confidence_decision_needs_two_candidates(sims):
    decision = confidence_decision()
    decision["modelRefs"] = [{"model": "large"}]
    with pytest.raises(Exception) as info:
        parse_config(config(ports(sims), [decision]))
    assert "routing.decisions[0].algorithm.confidence.modelRefs: a confidence decision needs at least two models" in str(
        info.value
    )


async def test_cancelling_a_stream_cancels_the_in_flight_calls(sims):
    decision = remom_decision(breadth_schedule=[2])
    decision["modelRefs"] = [{"model": "hang"}]
    app = App.from_config(parse_config(config(ports(sims), [decision])))
    _, action = await ask(app, "rounds", stream=True)
    it = action.chunks.__aiter__()
    await it.__anext__()  # the run started
    for _ in range(100):
        if len(sims["hang"].requests) == 2:
            break
        await asyncio.sleep(0.02)
    await action.chunks.aclose()  # the client went away
    for _ in range(100):
        if all(r["cancelled"] for r in sims["hang"].requests):
            break
        await asyncio.sleep(0.02)
    assert [r["cancelled"] for r in sims["hang"].requests] == [True, True]
    await app.close()
