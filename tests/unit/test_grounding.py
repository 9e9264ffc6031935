"""Grounding-aware Fusion: claim splitting, evidence, score aggregation and each policy on fixed scores
(no model), the stage's faults (panel of one, timeout, missing model) with a fake encoder, and one
in-process Fusion run over the simulator with the real NLI model where one member contradicts a tool
result."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import REGISTRY

from router.app import App
from router.config import parse_config
from router.extproc.pipeline import handle
from router.looper.encoders import Entailment, ModelUnavailable
from router.looper.grounding import (
    AnswerScore,
    ClaimVerdict,
    GroundingSettings,
    answer_score,
    chunk,
    decide,
    evidence_texts,
    ground,
    split_claims,
    verdict_of,
)
from router.sim import SimBackendSpec, running_backends
from router.state import RequestState

MODELS = Path(__file__).resolve().parents[2] / "models"

E = Entailment(0.9, 0.05, 0.05)
N = Entailment(0.05, 0.9, 0.05)
C = Entailment(0.05, 0.05, 0.9)


def test_claims_are_sentences_and_list_items_without_code():
    text = "Paris is the capital. It has 2 million people!\n- Item one is here\n```\nx = 1. y = 2.\n```\nDone now."
    c = split_claims(text)
    assert c.claims == ["Paris is the capital.", "It has 2 million people!", "Item one is here", "Done now."]
    assert not c.truncated


def test_long_answers_are_cut_to_the_claim_budget_and_flagged():
    text = " ".join(f"Sentence number {i} is here." for i in range(20))
    c = split_claims(text, max_claims=5, max_chars=12)
    assert len(c.claims) == 5 and c.total == 20 and c.dropped == 15 and c.cut == 5 and c.truncated
    assert all(len(x) <= 12 for x in c.claims)


def test_evidence_is_tool_results_and_documents_in_system_or_user_messages():
    msgs = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Question?\n<document>The sky is blue.</document>"},
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 4}'},
        {"role": "user", "content": "Context:\nWater boils at 100 C."},
    ]
    assert evidence_texts(msgs) == ["The sky is blue.", '{"temp": 4}', "Water boils at 100 C."]
    assert evidence_texts([{"role": "user", "content": "no documents here"}]) == []


def test_chunks_keep_sentences_together_and_cut_huge_lines():
    chunks = chunk(["A one. B two. C three.", "x" * 1500], max_chars=600)
    assert chunks[0] == "A one. B two. C three." and [len(c) for c in chunks[1:]] == [600, 600, 300]


def test_panel_verdicts_average_the_peers_and_name_the_contradicting_ones():
    v = verdict_of("claim", [("a", C), ("b", C)], "panel")
    assert v.contradicted and v.against == "a,b" and v.support == pytest.approx(0.05 + 0.025)
    mixed = verdict_of("claim", [("a", E), ("b", C)], "panel")  # one peer agrees, one contradicts: not contradicted
    assert not mixed.contradicted
    ctx = verdict_of("claim", [("context", N), ("context", C)], "context")  # the most decisive chunk
    assert ctx.contradicted and ctx.against == "context"


def test_answer_score_is_mean_support_minus_the_contradiction_penalty():
    ok = ClaimVerdict("a", 1.0, 0.0, False, "")
    bad = ClaimVerdict("b", 0.0, 1.0, True, "x")
    assert answer_score([ok, ok], 0.3) == 1.0
    assert answer_score([ok, bad], 0.3) == pytest.approx(0.5 - 0.15)
    assert answer_score([bad], 0.3) == 0.0 and answer_score([], 0.3) == 0.5


def scores(*pairs: tuple[str, float]) -> list[AnswerScore]:
    return [AnswerScore(m, s, [], 1, False) for m, s in pairs]


def test_policies_on_fixed_scores():
    s = scores(("a", 0.9), ("b", 0.2), ("c", 0.6))
    assert decide(s, "weight", 0.5, 1) == {"a": "weighted", "b": "weighted", "c": "weighted"}
    assert decide(s, "annotate", 0.5, 1) == {"a": "annotated", "b": "annotated", "c": "annotated"}
    assert decide(s, "filter", 0.5, 1) == {"a": "kept", "b": "dropped", "c": "kept"}
    # min_keep keeps the best ones even below min_score.
    assert decide(s, "filter", 0.95, 2) == {"a": "kept", "b": "dropped", "c": "kept"}
    assert decide(s, "filter", 0.95, 5) == {"a": "kept", "b": "kept", "c": "kept"}


class FakeEncoders:
    """Entailment by a lookup on the hypothesis; optional delay or failure."""

    def __init__(self, table: dict[str, Entailment] | None = None, delay: float = 0.0, fail: Exception | None = None):
        self.table = table or {}
        self.delay = delay
        self.fail = fail
        self.pairs: list[tuple[str, str]] = []

    async def embed(self, model: str, texts: Sequence[str]) -> np.ndarray:
        return np.eye(len(texts), 8, dtype=np.float32)

    async def entail(self, model: str, pairs: Sequence[tuple[str, str]]) -> list[Entailment]:
        if self.fail:
            raise self.fail
        await asyncio.sleep(self.delay)
        self.pairs += list(pairs)
        return [self.table.get(h, N) for _, h in pairs]


TOOL_MSGS = [{"role": "user", "content": "weather in Oslo?"}, {"role": "tool", "tool_call_id": "c", "content": "Oslo: 4 C, rain"}]


async def test_context_reference_scores_each_answer_and_filter_drops_the_contradicted_one():
    enc = FakeEncoders({"It is 4 C in Oslo.": E, "It is 25 C and sunny.": C})
    g = GroundingSettings(enabled=True, policy="filter", min_score=0.5)
    out = await ground(enc, g, [("good", "It is 4 C in Oslo."), ("bad", "It is 25 C and sunny.")], TOOL_MSGS)
    t = out.trace
    assert t.status == "applied" and t.reference == "context" and t.pairs == 2
    by = {a.model: a for a in t.answers}
    assert by["good"].action == "kept" and by["bad"].action == "dropped" and "min_score" in by["bad"].reason
    assert (
        by["bad"].contradicted_claims[0].claim == "It is 25 C and sunny."
        and by["bad"].contradicted_claims[0].against == "context"
    )
    assert not out.keep("bad") and out.keep("good")


async def test_hybrid_without_context_uses_the_panel_and_weight_notes_the_judge():
    enc = FakeEncoders({"Sydney is the capital.": C, "Canberra is the capital.": E})
    g = GroundingSettings(enabled=True)  # hybrid, weight
    msgs = [{"role": "user", "content": "capital of Australia?"}]
    out = await ground(
        enc, g, [("a", "Canberra is the capital."), ("b", "Canberra is the capital."), ("c", "Sydney is the capital.")], msgs
    )
    assert out.trace.reference == "panel" and out.trace.pairs == 6
    assert "contradicted claims: Sydney is the capital." in out.note("c") and "groundedness" in out.note("a")
    assert {a.model: a.action for a in out.trace.answers} == {"a": "weighted", "b": "weighted", "c": "weighted"}


async def test_a_panel_of_one_is_skipped_and_recorded():
    out = await ground(FakeEncoders(), GroundingSettings(enabled=True), [("a", "x y z.")], [{"role": "user", "content": "q"}])
    assert out.trace.status == "skipped" and out.trace.reason == "panel_of_one" and not out.applied


async def test_a_slow_entailment_model_is_a_per_request_skip_or_failure():
    g = GroundingSettings(enabled=True, timeout_seconds=0.05)
    out = await ground(FakeEncoders(delay=1.0), g, [("a", "A b c."), ("b", "D e f.")], [{"role": "user", "content": "q"}])
    assert out.trace.status == "skipped" and out.trace.reason.startswith("timeout")
    g = GroundingSettings(enabled=True, timeout_seconds=0.05, on_error="fail")
    out = await ground(FakeEncoders(delay=1.0), g, [("a", "A b c."), ("b", "D e f.")], [{"role": "user", "content": "q"}])
    assert out.trace.status == "failed"


async def test_a_missing_model_is_a_skip_with_its_reason():
    out = await ground(
        FakeEncoders(fail=ModelUnavailable("model 'nli': gone")),
        GroundingSettings(enabled=True),
        [("a", "A b c."), ("b", "D e f.")],
        [{"role": "user", "content": "q"}],
    )
    assert out.trace.status == "skipped" and out.trace.reason.startswith("model_unavailable") and "nli" in out.trace.reason


# --------------------------------------------------------------------------- in-process Fusion, real NLI model


def fusion_config(ports: dict[str, int], grounding: dict[str, Any], models_dir: Path = MODELS) -> dict[str, Any]:
    return {
        "global": {"integrations": {"looper": {"timeout_seconds": 10}}, "classifiers": {"models_dir": str(models_dir)}},
        "backends": [{"name": f"b-{n}", "endpoint": f"http://127.0.0.1:{p}"} for n, p in ports.items()],
        "models": [{"name": n, "backend": f"b-{n}"} for n in ports],
        "default_model": "judge",
        "routing": {
            "decisions": [
                {
                    "name": "grounded",
                    "priority": 10,
                    "modelRefs": [{"model": "right"}, {"model": "wrong"}],
                    "algorithm": {
                        "type": "fusion",
                        "fusion": {"model": "judge", "analysis_models": ["right", "right2", "wrong"], "grounding": grounding},
                    },
                }
            ]
        },
    }


@pytest.fixture
async def panel() -> AsyncIterator[dict[str, Any]]:
    specs = [
        SimBackendSpec(name="b-right", models=["right"], fixed_answer="Oslo has 4 degrees Celsius and light rain."),
        SimBackendSpec(name="b-right2", models=["right2"], fixed_answer="It is 4 degrees Celsius in Oslo, with light rain."),
        SimBackendSpec(name="b-wrong", models=["wrong"], fixed_answer="It is 25 degrees Celsius and sunny in Oslo."),
        SimBackendSpec(name="b-judge", models=["judge"], mode="judge_json"),
    ]
    async with running_backends(specs) as backends:
        yield {b.name.removeprefix("b-"): b for b in backends}


def needs_models() -> None:
    if not (MODELS / "nli" / "model.onnx").is_file():
        pytest.skip("models/nli is not built (make models)")


async def run_fusion(app: App) -> tuple[dict[str, Any], list[Any]]:
    raw = {
        "model": "auto",
        "messages": [
            {"role": "user", "content": "What is the weather in Oslo?"},
            {
                "role": "assistant",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "Oslo: 4 degrees Celsius, light rain."},
        ],
    }
    state = RequestState(policy=app.policy, body=bytearray(orjson.dumps(raw)))
    action = await handle(app, state)
    return orjson.loads(action.body), []  # type: ignore[union-attr]


async def test_fusion_filter_drops_the_member_that_contradicts_the_tool_result(panel):
    needs_models()
    from router.signals.runtime import build_runtime

    cfg = parse_config(
        fusion_config({n: b.port for n, b in panel.items()}, {"enabled": True, "policy": "filter", "on_error": "fail"})
    )
    runtime = build_runtime(cfg)
    assert runtime is not None  # grounding makes the runtime exist even with no ML signal
    app = App.from_config(cfg, runtime=runtime)
    await app.policy.start()  # loads the NLI and embedding models at start-up
    try:
        body, _ = await run_fusion(app)
    finally:
        await runtime.close()
        await app.loopers.close()
    g = body["fusion"]["grounding"]
    assert g["status"] == "applied" and g["reference"] == "context"
    assert (
        REGISTRY.get_sample_value("fusion_router_grounding_total", {"decision": "grounded", "status": "applied", "reason": ""})
        >= 1
    )
    assert (
        REGISTRY.get_sample_value(
            "fusion_router_grounding_answers_total", {"decision": "grounded", "result": "dropped", "kind": "contradicted"}
        )
        >= 1
    )
    by = {a["model"]: a for a in g["answers"]}
    assert by["wrong"]["action"] == "dropped" and by["wrong"]["contradicted_claims"]
    assert by["right"]["action"] == "kept" and by["right"]["score"] > by["wrong"]["score"]
    # What the judge read never contained the dropped answer.
    judge_calls = [r for r in panel["judge"].requests if r["path"] == "/v1/chat/completions"]
    assert len(judge_calls) == 2 and all("25 degrees" not in orjson.dumps(r["body"]).decode() for r in judge_calls)


def test_a_missing_nli_model_stops_start_up_naming_the_path_unless_skip(tmp_path):
    from router.signals.runtime import build_runtime

    ports = {"right": 1, "right2": 2, "wrong": 3, "judge": 4}
    cfg = parse_config(fusion_config(ports, {"enabled": True, "on_error": "fail"}, tmp_path))
    app = App.from_config(cfg, runtime=build_runtime(cfg))
    with pytest.raises(RuntimeError) as err:
        asyncio.run(app.policy.start())
    assert "algorithm.fusion.grounding.nli_model" in str(err.value) and str(tmp_path / "nli") in str(err.value)
    cfg = parse_config(fusion_config(ports, {"enabled": True, "on_error": "skip"}, tmp_path))
    app = App.from_config(cfg, runtime=build_runtime(cfg))
    asyncio.run(app.policy.start())  # skip: starts, grounding will be skipped per request
    assert "nli" in app.policy.unavailable_models


def test_check_config_names_a_missing_required_nli_model(tmp_path):
    from router.signals.runtime import missing_models

    ports = {"right": 1, "right2": 2, "wrong": 3, "judge": 4}
    strict = parse_config(fusion_config(ports, {"enabled": True, "on_error": "fail"}, tmp_path))
    problems = missing_models(strict, tmp_path)
    assert any("algorithm.fusion.grounding.nli_model" in p and str(tmp_path / "nli") in p for p in problems)
    assert missing_models(parse_config(fusion_config(ports, {"enabled": True}, tmp_path)), tmp_path) == []


async def test_annotate_passes_the_same_notes_without_the_weighting_instruction():
    from router.looper.grounding import ANNOTATE_NOTE, WEIGHT_NOTE

    enc = FakeEncoders({"Sydney is the capital.": C})
    out = await ground(
        enc,
        GroundingSettings(enabled=True, policy="annotate"),
        [("a", "Canberra is the capital."), ("c", "Sydney is the capital.")],
        [{"role": "user", "content": "q"}],
    )
    assert "contradicted claims: Sydney is the capital." in out.note("c")
    assert WEIGHT_NOTE.startswith(ANNOTATE_NOTE) and "Trust" not in ANNOTATE_NOTE
