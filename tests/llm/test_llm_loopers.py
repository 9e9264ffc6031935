"""The looper toolbox on real models: confidence escalation scored from llama-server's own token logprobs,
the adaptive Fusion gate passing and failing, and ReMoM rounds, each once through the official openai
client -> the real Envoy -> the router -> recording proxies -> llama-server (config/llm.yaml).

Real models are not deterministic, so these tests assert structure, that the confidences are real
probabilities computed from real logprobs, which calls each backend received, and that usage is the sum
of what the backends reported — never the words. The algorithms' knobs come in request plugins, so
config/llm.yaml stays the demo's config. Every call is capped at a few tokens (two slow cores).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from tests.llm.lane import Lane

pytestmark = pytest.mark.envoy

SMOL, CODER = "smollm2-135m", "qwen2.5-coder-0.5b"
SHORT = 16
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def summed(records: list[dict[str, Any]]) -> dict[str, int]:
    """What the backends reported, added up over the calls they answered."""
    assert records and all(r["status"] == 200 and r["completed"] and r["usage"] for r in records), records
    return {k: sum(int(r["usage"][k]) for r in records) for k in USAGE_KEYS}


def usage(doc: dict[str, Any]) -> dict[str, int]:
    return {k: int(doc[k]) for k in USAGE_KEYS}


def extra(chunk: Any, key: str) -> dict[str, Any]:
    """A field the OpenAI SDK does not know, e.g. the trace on the finish chunk."""
    value = (chunk.model_extra or {}).get(key)
    assert isinstance(value, dict), f"no {key!r} on {chunk}"
    return value


def chunk_usage(chunk: Any) -> dict[str, int]:
    assert chunk.choices == [] and chunk.usage is not None  # the usage chunk comes last
    return {k: int(getattr(chunk.usage, k)) for k in USAGE_KEYS}


def probability(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value) and 0.0 < value <= 1.0


def test_confidence_escalation_scores_real_logprobs(lane: Lane) -> None:
    # threshold 1.0: no real answer is that sure, so both tiers are asked and scored; the run returns the
    # last answer (`exhausted`). The acceptance rule is checked against the scores either way.
    plugin = {
        "id": "confidence",
        "models": [SMOL, CODER],
        "threshold": 1.0,
        "confidence_method": "hybrid",
        "max_completion_tokens": SHORT,
        "escalation_order": "declared",
    }
    resp = lane.client().chat.completions.with_raw_response.create(
        model=SMOL,
        messages=[{"role": "user", "content": "Name one color of the sky."}],
        temperature=0,
        seed=7,
        max_tokens=SHORT,
        extra_body={"plugins": [plugin]},
    )
    body = json.loads(resp.text)
    trace = body["confidence"]
    assert resp.headers["x-vsr-response-path"] == "confidence" and trace["decision"] == "confidence_direct"
    assert trace["escalation_order"] == [SMOL, CODER] and trace["method"] == "hybrid"
    attempts = trace["attempts"]
    print("confidence attempts:", [(a["model"], a["confidence"], a["tokens_scored"]) for a in attempts])
    assert attempts and attempts[0]["model"] == SMOL
    for a in attempts:
        assert probability(a["confidence"]), a  # a real probability from real token logprobs, not a default
        assert a["method"] == "hybrid" and 0 < a["tokens_scored"] <= SHORT + 1
        assert a["accepted"] == (a["confidence"] >= trace["threshold"])
        assert a["reason"] == ("above_threshold" if a["accepted"] else "below_threshold")
    accepted = [a for a in attempts if a["accepted"]]
    assert len(accepted) <= 1 and (not accepted or accepted[0] is attempts[-1])  # stops at the first sure answer
    assert trace["outcome"] == ("accepted" if accepted else "exhausted") and trace["accepted_model"] == attempts[-1]["model"]
    assert len(attempts) == (1 if attempts[0]["accepted"] else 2)
    # what the backends saw: one call per attempted tier, each asking for logprobs
    records = {m: lane.records(lane.backend_of(m)) for m in (SMOL, CODER)}
    for a in attempts:
        [call] = records[a["model"]]
        assert call["body"]["logprobs"] is True and call["body"]["top_logprobs"] == 2
        assert call["body"]["model"] == lane.served_id(a["model"]) and call["body"]["max_completion_tokens"] == SHORT
        assert a["usage"] == usage(call["usage"])
    assert sum(len(r) for r in records.values()) == len(attempts) == trace["iterations"]
    assert usage(body["usage"]) == summed([r for rs in records.values() for r in rs])
    assert resp.headers["x-vsr-looper-iterations"] == str(len(attempts))
    assert resp.headers["x-vsr-looper-total-tokens"] == str(body["usage"]["total_tokens"])
    assert resp.headers["x-vsr-selected-model"] == trace["accepted_model"]
    assert body["choices"][0]["message"]["content"] is not None


def _gate_plugin(threshold: float) -> dict[str, Any]:
    # The `deliberate` decision (panel smollm2 + coder, coder judges) with a gate on smollm2 added for
    # this request; the gate model sits in the panel, so an unsure gate's answer is reused.
    return {"id": "fusion", "max_completion_tokens": SHORT, "gate": {"model": SMOL, "threshold": threshold}}


def test_a_confident_gate_answers_alone_on_real_logprobs(lane: Lane) -> None:
    # threshold 0.01: any real answer clears it; one call, sent whole to a streaming client.
    stream = lane.client().chat.completions.create(
        model="vllm-sr/auto",
        messages=[{"role": "user", "content": "Compare tea and coffee in one sentence."}],
        temperature=0,
        seed=7,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"plugins": [_gate_plugin(0.01)]},
    )
    chunks = list(stream)
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1
    trace = extra(finish[0], "fusion")
    gate = trace["gate"]
    print("gate (passing):", gate)
    assert trace["decision"] == "deliberate" and trace["outcome"] == "gated" and trace["iterations"] == 1
    assert gate["model"] == SMOL and gate["passed"] and probability(gate["confidence"]) and gate["confidence"] >= 0.01
    assert gate["method"] == "hybrid" and gate["calls_saved"] == 3
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    [call] = lane.records(lane.backend_of(SMOL))
    assert lane.records(lane.backend_of(CODER)) == []  # no panel, no judge, no synthesis
    assert call["body"]["logprobs"] is True and not call["body"].get("stream")
    assert chunk_usage(chunks[-1]) == summed([call])


def test_an_unsure_gate_runs_the_panel_and_reuses_its_answer_on_real_models(lane: Lane) -> None:
    # threshold 1.0: no real answer clears it; the panel runs and the gate's answer is smollm2's panel answer.
    resp = lane.client().chat.completions.with_raw_response.create(
        model="vllm-sr/auto",
        messages=[{"role": "user", "content": "Compare tea and coffee in one sentence."}],
        temperature=0,
        seed=7,
        extra_body={"plugins": [_gate_plugin(1.0)]},
    )
    body = json.loads(resp.text)
    trace = body["fusion"]
    gate = trace["gate"]
    print("gate (failing):", gate)
    assert trace["outcome"] == "fused" and not gate["passed"] and probability(gate["confidence"]) and gate["calls_saved"] == 0
    assert [(r["model"], r["from_gate"]) for r in trace["responses"]] == [(SMOL, True), (CODER, False)]
    smol, coder = lane.records(lane.backend_of(SMOL)), lane.records(lane.backend_of(CODER))
    assert len(smol) == 1 and len(coder) == 3  # gate (= panel answer) | panel, judge, synthesis
    assert trace["iterations"] == 4 and resp.headers["x-vsr-looper-iterations"] == "4"
    assert smol[0]["body"]["logprobs"] is True and "logprobs" not in coder[0]["body"]
    judge_prompt = coder[1]["body"]["messages"][-1]["content"]
    assert all(r["content"] in judge_prompt for r in trace["responses"])  # the judge read the reused gate answer
    assert usage(body["usage"]) == summed(smol + coder)
    stages = trace["usage"]
    assert usage(stages["gate"]) == summed(smol) and usage(stages["panel"]) == summed([coder[0]])
    assert usage(stages["judge"]) == summed([coder[1]]) and usage(stages["synthesis"]) == summed([coder[2]])


def test_remom_rounds_and_a_live_synthesis_on_real_models(lane: Lane) -> None:
    plugin = {
        "id": "remom",
        "models": [SMOL, CODER],
        "breadth_schedule": [2, 1],
        "synthesis_model": SMOL,
        "max_completion_tokens": SHORT,
        "include_intermediate_responses": True,
    }
    stream = lane.client().chat.completions.create(
        model=SMOL,
        messages=[{"role": "user", "content": "Name two planets."}],
        temperature=0,
        seed=7,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"plugins": [plugin]},
    )
    chunks = list(stream)
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1
    trace = extra(finish[0], "remom")
    assert trace["decision"] == "remom_direct" and trace["outcome"] == "synthesized" and trace["iterations"] == 4
    assert [r["models"] for r in trace["rounds"]] == [[SMOL, CODER], [SMOL]]
    assert [(r["answered"], r["failed"]) for r in trace["rounds"]] == [(2, 0), (1, 0)]
    smol, coder = lane.records(lane.backend_of(SMOL)), lane.records(lane.backend_of(CODER))
    assert len(smol) == 3 and len(coder) == 1  # round 1 | round 1, round 2, synthesis
    round1 = [r["content"] for r in trace["rounds"][0]["responses"]]
    round2_call = next(r for r in smol if "Other models answered" in json.dumps(r["body"]["messages"]))
    assert all(a in round2_call["body"]["messages"][-1]["content"] for a in round1)  # round 2 saw round 1
    synthesis = [r for r in smol if r["body"].get("stream")]
    assert len(synthesis) == 1 and "Latest answers" in synthesis[0]["body"]["messages"][0]["content"]
    assert trace["rounds"][1]["responses"][0]["content"] in synthesis[0]["body"]["messages"][0]["content"]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    assert chunk_usage(chunks[-1]) == summed(smol + coder)
    stages = trace["usage"]
    assert sum(stages[s]["total_tokens"] for s in ("round1", "round2", "synthesis")) == summed(smol + coder)["total_tokens"]
