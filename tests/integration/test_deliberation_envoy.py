"""Grounding-aware Fusion, self-consistency and debate end to end: the official openai client -> the real
Envoy -> the router (real ONNX NLI and embedding models) -> simulated backends with scripted answers.

* Grounded Fusion: one panel member contradicts the tool result in the request; under ``filter`` its
  answer is left out of what the judge reads and the trace says why.
* Self-consistency and debate on every entry path (auto alias, direct slug, request plugin), streamed and not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import clear_sim_requests, client, raw, sim_requests, start_stack

pytestmark = pytest.mark.envoy

MODELS = Path(__file__).resolve().parents[2] / "models"
CANBERRA = "The capital of Australia is Canberra."
SIMS: dict[str, dict[str, Any]] = {
    "b-right": {"fixed_answer": "Oslo has 4 degrees Celsius and light rain."},
    "b-right2": {"fixed_answer": "It is 4 degrees Celsius in Oslo, with light rain."},
    "b-wrong": {"fixed_answer": "It is 25 degrees Celsius and sunny in Oslo."},
    "b-a1": {"fixed_answer": CANBERRA},
    "b-a2": {"fixed_answer": "Canberra is the capital of Australia."},
    "b-a3": {"fixed_answer": "The capital of Australia is Sydney."},
    "b-d1": {"latency_ms": 5},
    "b-d2": {"latency_ms": 5},
    "b-judge": {"mode": "judge_json", "latency_ms": 5, "tps": 400, "max_tokens": 24},
}
BACKENDS = list(SIMS)


def config() -> dict[str, Any]:
    models = [{"name": b.removeprefix("b-"), "backend": b} for b in BACKENDS]
    fusion = {
        "model": "judge",
        "analysis_models": ["right", "right2", "wrong"],
        "grounding": {"enabled": True, "policy": "filter", "min_score": 0.5, "on_error": "fail"},
    }
    return {
        "global": {
            "router": {"auto_model_names": ["vllm-sr/auto"]},
            "classifiers": {"models_dir": str(MODELS)},
            "integrations": {"looper": {"endpoint": "http://127.0.0.1:8802/v1/chat/completions", "timeout_seconds": 30}},
        },
        "backends": [{"name": b, "endpoint": "http://127.0.0.1:1"} for b in BACKENDS],
        "models": models,
        "default_model": "judge",
        "routing": {
            "signals": {"keywords": [{"name": k, "keywords": [k]} for k in ("weather", "capital", "debate")]},
            "decisions": [
                {
                    "name": "grounded",
                    "priority": 30,
                    "rules": {"type": "keyword", "name": "weather"},
                    "modelRefs": [{"model": "right"}],
                    "algorithm": {"type": "fusion", "fusion": fusion},
                },
                {
                    "name": "vote",
                    "priority": 20,
                    "rules": {"type": "keyword", "name": "capital"},
                    "modelRefs": [{"model": "a1"}, {"model": "a2"}, {"model": "a3"}],
                    "algorithm": {"type": "self_consistency", "self_consistency": {"temperature": 0.7}},
                },
                {
                    "name": "argue",
                    "priority": 10,
                    "rules": {"type": "keyword", "name": "debate"},
                    "modelRefs": [{"model": "d1"}, {"model": "d2"}],
                    "algorithm": {
                        "type": "debate",
                        "debate": {
                            "max_rounds": 2,
                            "synthesis_model": "judge",
                            "convergence_threshold": 0.999,
                            "include_intermediate_responses": True,
                        },
                    },
                },
            ],
        },
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not (MODELS / "nli" / "model.onnx").is_file():
        pytest.skip("models/nli is not built (make models)")
    s = start_stack(tmp_path_factory.mktemp("deliberation"), config(), SIMS)
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _fresh_logs(stack):
    clear_sim_requests(stack)


def chat_calls(stack, backend: str) -> list[dict[str, Any]]:
    return [r for r in sim_requests(stack, backend) if r["path"] == "/v1/chat/completions"]


def post(stack, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return raw(stack.url, "POST", "/v1/chat/completions", json.dumps(body).encode())


def events(data: bytes) -> list[Any]:
    out = [line[6:] for line in data.decode().splitlines() if line.startswith("data: ")]
    return [e if e == "[DONE]" else json.loads(e) for e in out]


TOOL_TURNS = [
    {"role": "user", "content": "What is the weather in Oslo?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "Oslo: 4 degrees Celsius, light rain."},
]


def test_grounded_fusion_leaves_out_the_member_that_contradicts_the_tool_result(stack):
    resp = client(stack).chat.completions.with_raw_response.create(model="vllm-sr/auto", messages=TOOL_TURNS)
    doc = json.loads(resp.http_response.text)
    g = doc["fusion"]["grounding"]
    assert g["status"] == "applied" and g["reference"] == "context" and g["policy"] == "filter"
    by = {a["model"]: a for a in g["answers"]}
    assert by["wrong"]["action"] == "dropped" and "min_score" in by["wrong"]["reason"]
    assert by["wrong"]["contradicted_claims"] and by["wrong"]["contradicted_claims"][0]["against"] == "context"
    assert by["right"]["action"] == "kept" and by["right2"]["action"] == "kept"
    # Judge and synthesis (both b-judge) never read the dropped answer.
    judge = chat_calls(stack, "b-judge")
    assert len(judge) == 2 and all("25 degrees" not in json.dumps(r["body"]) for r in judge)
    assert "grounding" in doc["fusion"]["latency_ms"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("entry", ["auto", "slug", "plugin"])
def test_self_consistency_returns_the_majority_answer_on_every_entry_path(stack, entry, stream):
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": "what is the capital of Australia?"}],
        "stream": stream,
        "model": {"auto": "vllm-sr/auto", "slug": "vllm-sr/self-consistency", "plugin": "judge"}[entry],
    }
    if entry == "plugin":
        body["plugins"] = [{"id": "self_consistency", "models": ["a1", "a2", "a3"]}]
    status, headers, data = post(stack, body)
    assert status == 200, data[:400]
    if stream:
        evs = events(data)
        assert evs[-1] == "[DONE]"
        content = "".join((e["choices"][0]["delta"].get("content") or "") for e in evs[:-1] if e.get("choices"))
        trace = next(e["self_consistency"] for e in evs[:-1] if isinstance(e, dict) and "self_consistency" in e)
    else:
        doc = json.loads(data)
        content, trace = doc["choices"][0]["message"]["content"], doc["self_consistency"]
    assert content in (CANBERRA, "Canberra is the capital of Australia.")
    assert trace["clustering"] == "embedding" and trace["confidence"] == pytest.approx(2 / 3, abs=1e-3)
    assert trace["outcome"] == "consensus" and max(c["size"] for c in trace["clusters"]) == 2
    # Streams send their headers before the run, so the looper headers come with plain responses only.
    assert headers.get("x-vsr-looper-algorithm") == (None if stream else "self_consistency")
    # One call per sample, no judge.
    assert [len(chat_calls(stack, b)) for b in ("b-a1", "b-a2", "b-a3", "b-judge")] == [1, 1, 1, 0]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("entry", ["auto", "slug", "plugin"])
def test_debate_revises_then_synthesizes_on_every_entry_path(stack, entry, stream):
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": "debate: is tea better than coffee?"}],
        "stream": stream,
        "model": {"auto": "vllm-sr/auto", "slug": "vllm-sr/debate", "plugin": "judge"}[entry],
    }
    if entry == "plugin":
        body["plugins"] = [
            {"id": "debate", "models": ["d1", "d2"], "synthesis_model": "judge", "max_rounds": 1, "convergence_threshold": 0.999}
        ]
    status, headers, data = post(stack, body)
    assert status == 200, data[:400]
    if stream:
        evs = events(data)
        assert evs[-1] == "[DONE]"
        deltas = [e for e in evs[:-1] if e.get("choices") and e["choices"][0]["delta"].get("content")]
        assert len(deltas) > 1  # the synthesis was relayed as it streamed
        trace = next(e["debate"] for e in evs[:-1] if isinstance(e, dict) and "debate" in e)
    else:
        trace = json.loads(data)["debate"]
    rounds = 2 if entry == "plugin" else 3
    # The simulated members echo the prompt: their answers differ only by their model tags (cosine ~0.99),
    # below this decision's 0.999 threshold, so every round runs.
    assert len(trace["rounds"]) == rounds and trace["stop_reason"] == "max_rounds"
    assert all(0 < r["agreement"] < 0.999 and not r["converged"] for r in trace["rounds"])
    d1 = chat_calls(stack, "b-d1")
    assert len(d1) == rounds
    revision = d1[1]["body"]["messages"]
    assert revision[-2]["role"] == "assistant" and "[d2@b-d2]" in revision[-1]["content"]
    synth = [r for r in chat_calls(stack, "b-judge")]
    assert len(synth) == 1 and headers.get("x-vsr-looper-algorithm") == (None if stream else "debate")


def test_debate_stops_early_once_the_answers_converge(stack):
    body = {
        "model": "judge",
        "messages": [{"role": "user", "content": "debate: tabs or spaces?"}],
        "plugins": [
            {"id": "debate", "models": ["d1", "d2"], "synthesis_model": "judge", "max_rounds": 3, "convergence_threshold": 0.9}
        ],
    }
    status, _, data = post(stack, body)
    assert status == 200, data[:400]
    trace = json.loads(data)["debate"]
    assert trace["stop_reason"] == "converged" and len(trace["rounds"]) == 1 and trace["rounds"][0]["converged"]
    assert len(chat_calls(stack, "b-d1")) == 1 and len(chat_calls(stack, "b-judge")) == 1  # no revision, one synthesis
