"""Grounding-aware Fusion, self-consistency and debate once each on real models: the official openai
client -> the real Envoy -> the router (real NLI and embedding models) -> recording proxies ->
llama-server (config/llm.yaml, plus the lane's never-matching grounding decision that loads the models).

Real answers are not deterministic: these tests assert structure — grounding scored every panel answer
against the other one, the samples were clustered by embeddings, the debate revised and synthesized —
and which calls each backend received, never the words.
"""

from __future__ import annotations

import json

import pytest

from tests.llm.lane import Lane

pytestmark = pytest.mark.envoy

SMOL, CODER = "smollm2-135m", "qwen2.5-coder-0.5b"
SHORT = 24


def chat_calls(lane: Lane, model: str) -> int:
    return len(lane.records(lane.backend_of(model)))


def test_grounded_fusion_scores_each_real_answer(lane: Lane) -> None:
    plugin = {
        "id": "fusion",
        "analysis_models": [SMOL, CODER],
        "model": CODER,
        "max_completion_tokens": SHORT,
        "grounding": {"enabled": True, "reference": "panel", "policy": "weight", "on_error": "fail"},
    }
    resp = lane.client().chat.completions.with_raw_response.create(
        model=CODER,
        messages=[{"role": "user", "content": "In one sentence: what is the capital of France?"}],
        temperature=0,
        max_tokens=SHORT,
        extra_body={"plugins": [plugin]},
    )
    trace = json.loads(resp.text)["fusion"]
    g = trace["grounding"]
    print("grounding:", [(a["model"], a["score"], len(a["contradicted_claims"])) for a in g["answers"]])
    assert g["status"] == "applied" and g["reference"] == "panel" and g["pairs"] >= 2
    assert [a["model"] for a in g["answers"]] == [SMOL, CODER]
    assert all(0.0 <= a["score"] <= 1.0 and a["action"] == "weighted" and a["claims"] >= 1 for a in g["answers"])
    assert trace["latency_ms"]["grounding"] > 0 and trace["iterations"] == 4  # panel 2 + judge + synthesis: no extra call


def test_self_consistency_clusters_real_samples(lane: Lane) -> None:
    plugin = {"id": "self_consistency", "models": [SMOL], "samples": 3, "temperature": 0.9, "max_completion_tokens": SHORT}
    resp = lane.client().chat.completions.with_raw_response.create(
        model=SMOL,
        messages=[{"role": "user", "content": "Name a primary color."}],
        max_tokens=SHORT,
        extra_body={"plugins": [plugin]},
    )
    doc = json.loads(resp.text)
    trace = doc["self_consistency"]
    print("self_consistency:", trace["confidence"], [c["size"] for c in trace["clusters"]])
    assert trace["clustering"] == "embedding" and trace["samples_requested"] == 3
    assert sum(c["size"] for c in trace["clusters"]) == len(trace["samples"]) == 3
    assert trace["confidence"] == max(c["share"] for c in trace["clusters"])
    chosen = trace["samples"][trace["chosen_sample"]]["content"]
    assert doc["choices"][0]["message"]["content"] == chosen
    assert chat_calls(lane, SMOL) == 3 and chat_calls(lane, CODER) == 0  # no judge call


def test_debate_revises_and_streams_the_synthesis(lane: Lane) -> None:
    plugin = {
        "id": "debate",
        "models": [SMOL, CODER],
        "synthesis_model": CODER,
        "max_rounds": 1,
        "convergence_threshold": 0.999,
        "max_completion_tokens": SHORT,
        "include_intermediate_responses": True,
    }
    stream = lane.client().chat.completions.create(
        model=CODER,
        messages=[{"role": "user", "content": "Is 17 a prime number? Answer briefly."}],
        max_tokens=SHORT,
        stream=True,
        extra_body={"plugins": [plugin]},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    trace = next((c.model_extra or {}).get("debate") for c in chunks if (c.model_extra or {}).get("debate"))
    print("debate:", trace["stop_reason"], [r.get("agreement") for r in trace["rounds"]])
    assert text and trace["stop_reason"] in ("max_rounds", "converged")
    rounds = len(trace["rounds"])
    assert 1 <= rounds <= 2 and trace["rounds"][0]["answered"] == 2
    # Each member answered once per round; the coder also wrote the synthesis.
    assert chat_calls(lane, SMOL) == rounds and chat_calls(lane, CODER) == rounds + 1
