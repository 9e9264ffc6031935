"""The real-model lane: the official openai client -> the real Envoy -> the router -> recording proxies
-> real llama-server processes serving real GGUF models (config/llm.yaml, config/llm-servers.yaml).

Real models are not deterministic: these tests assert routing, structure, usage sums and what each
backend was actually sent, never the words. Lengths stay small because two cores decode slowly.
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

import pytest

from tests.llm.lane import Lane

pytestmark = pytest.mark.envoy

SMOL, CODER = "smollm2-135m", "qwen2.5-coder-0.5b"
SHORT = 24  # tokens per call: enough to see structure, cheap on two cores
# Fusion's decision caps every call at 96 tokens; tests lower that per request with the plugin.
SHORT_FUSION = {"id": "fusion", "max_completion_tokens": SHORT}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def chat(lane: Lane, prompt: str, model: str = "vllm-sr/auto", **kw: Any) -> Any:
    kw.setdefault("max_tokens", SHORT)
    return lane.client().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], temperature=0, seed=7, **kw
    )


def summed(records: list[dict[str, Any]]) -> dict[str, int]:
    """What the backends reported, added up over the calls they answered."""
    assert records and all(r["usage"] for r in records), [r["usage"] for r in records]
    return {k: sum(int(r["usage"][k]) for r in records) for k in USAGE_KEYS}


def all_records(lane: Lane) -> list[dict[str, Any]]:
    return [r for backend in lane.proxies for r in lane.records(backend)]


@pytest.mark.parametrize(
    ("prompt", "model", "expected"),
    [
        ("Say hello to my friend Ann.", "vllm-sr/auto", SMOL),  # decision `general`
        ("Write a python function that adds two numbers.", "vllm-sr/auto", CODER),  # decision `coding`
        ("Say hello.", CODER, CODER),  # a model asked by name
    ],
)
def test_requests_reach_the_model_their_route_names(lane: Lane, prompt: str, model: str, expected: str) -> None:
    resp = chat(lane, prompt, model=model)
    body = resp.parse()
    assert resp.headers["x-vsr-response-path"] == "routed"
    assert resp.headers["x-vsr-selected-model"] == expected
    backend = lane.backend_of(expected)
    [seen] = lane.records(backend)
    assert seen["body"]["model"] == lane.served_id(expected)  # the alias llama-server serves
    assert seen["status"] == 200 and seen["completed"]
    for other in lane.proxies:
        if other != backend:
            assert lane.records(other) == []
    choice = body.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert choice.message.role == "assistant" and choice.message.content
    # usage is what llama-server reported, unchanged
    assert body.usage.model_dump(include=set(USAGE_KEYS)) == {k: seen["usage"][k] for k in USAGE_KEYS}
    assert body.usage.completion_tokens <= SHORT


def test_fusion_runs_panel_judge_and_synthesis_on_both_models(lane: Lane) -> None:
    resp = chat(lane, "Compare tea and coffee in one sentence.", extra_body={"plugins": [SHORT_FUSION]})
    body = json.loads(resp.text)
    trace = body["fusion"]
    assert resp.headers["x-vsr-response-path"] == "fusion"
    assert trace["decision"] == "deliberate" and trace["judge_model"] == CODER
    assert trace["analysis_models"] == [SMOL, CODER]
    assert set(trace["answered_models"]) == {SMOL, CODER} and trace["failed_models"] == []
    assert trace["iterations"] == 4
    assert [r["model"] for r in trace["responses"]] == [SMOL, CODER]
    assert all(r["content"] for r in trace["responses"])
    # A 0.5B judge with 24 tokens rarely writes the full analysis JSON; the status says so.
    assert trace["analysis_status"] in ("ok", "judge_not_valid_json", "judge_schema_mismatch", "judge_empty_completion")
    smol, coder = lane.records(lane.backend_of(SMOL)), lane.records(lane.backend_of(CODER))
    assert len(smol) == 1 and len(coder) == 3  # panel | panel, judge, synthesis
    for r in smol + coder:
        assert r["status"] == 200 and r["completed"]
        assert r["body"]["max_completion_tokens"] == SHORT and "max_tokens" not in r["body"]
        assert "x-vsr-looper-token" not in r["headers"]  # the internal marker never reaches a backend
    assert smol[0]["body"]["model"] == lane.served_id(SMOL)
    assert {r["body"]["model"] for r in coder} == {lane.served_id(CODER)}
    judge, synthesis = coder[1]["body"], coder[2]["body"]
    panel_answers = [r["content"] for r in trace["responses"]]
    assert all(a in judge["messages"][-1]["content"] for a in panel_answers)  # the judge read both answers
    assert synthesis["messages"][0]["role"] == "system" and synthesis["messages"][-1]["content"].startswith("Compare tea")
    assert body["choices"][0]["message"]["content"]
    # usage is the sum of what the backends reported, per stage and in total
    assert body["usage"] == summed(smol + coder) | {k: v for k, v in body["usage"].items() if k not in USAGE_KEYS}
    stages = trace["usage"]
    assert {k: stages["panel"][k] for k in USAGE_KEYS} == summed([smol[0], coder[0]])
    assert {k: stages["judge"][k] for k in USAGE_KEYS} == summed([coder[1]])
    assert {k: stages["synthesis"][k] for k in USAGE_KEYS} == summed([coder[2]])


def test_fusion_streams_the_synthesis_and_ends_with_the_summed_usage(lane: Lane) -> None:
    stream = lane.client().chat.completions.create(
        model="vllm-sr/fusion",
        messages=[{"role": "user", "content": "Compare cats and dogs as pets."}],
        max_tokens=SHORT,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"plugins": [SHORT_FUSION]},
    )
    chunks = list(stream)
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert content and "".join(content).strip()
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish and finish[-1] in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage is not None  # the usage chunk comes last
    coder = lane.records(lane.backend_of(CODER))
    smol = lane.records(lane.backend_of(SMOL))
    assert len(coder) == 3 and len(smol) == 1
    # only the synthesis call streams from the backend; panel and judge are plain calls
    assert coder[2]["body"].get("stream") is True
    assert not any(r["body"].get("stream") for r in [*smol, coder[0], coder[1]])
    assert chunks[-1].usage.model_dump(include=set(USAGE_KEYS)) == summed(smol + coder)


def test_request_plugin_sets_the_panel_and_judge(lane: Lane) -> None:
    plugin = {"id": "fusion", "analysis_models": [CODER, SMOL], "model": SMOL, "max_completion_tokens": SHORT}
    resp = chat(lane, "Say hello to my friend Ann.", extra_body={"plugins": [plugin]})
    body = json.loads(resp.text)
    trace = body["fusion"]
    assert resp.headers["x-vsr-response-path"] == "fusion"
    assert trace["decision"] == "fusion_direct"  # no Fusion decision matched `general`
    assert trace["judge_model"] == SMOL and trace["analysis_models"] == [CODER, SMOL]
    smol, coder = lane.records(lane.backend_of(SMOL)), lane.records(lane.backend_of(CODER))
    assert len(coder) == 1 and len(smol) == 3  # panel | panel, judge, synthesis
    assert body["usage"]["total_tokens"] == summed(smol + coder)["total_tokens"]


def test_tools_reach_only_the_synthesis_call(lane: Lane) -> None:
    resp = chat(
        lane, "Compare the weather in Paris and Oslo today.", tools=[WEATHER_TOOL], extra_body={"plugins": [SHORT_FUSION]}
    )
    body = json.loads(resp.text)
    smol, coder = lane.records(lane.backend_of(SMOL)), lane.records(lane.backend_of(CODER))
    assert len(smol) == 1 and len(coder) == 3
    panel_and_judge = [smol[0], coder[0], coder[1]]
    for r in panel_and_judge:
        assert "tools" not in r["body"] and "tool_choice" not in r["body"]
    assert coder[2]["body"]["tools"] == [WEATHER_TOOL]
    choice = body["choices"][0]
    # The model may call the tool or answer in text; either way the answer is OpenAI-shaped.
    if choice["finish_reason"] == "tool_calls":
        calls = choice["message"]["tool_calls"]
        assert calls and all(c["type"] == "function" and c["function"]["name"] == "get_weather" for c in calls)
        assert all(isinstance(json.loads(c["function"]["arguments"]), dict) for c in calls)
    else:
        assert choice["finish_reason"] in ("stop", "length") and choice["message"]["content"] is not None
    assert body["usage"]["total_tokens"] == summed(smol + coder)["total_tokens"]


def _busy(lane: Lane, backend: str) -> list[dict[str, Any]]:
    return [s for s in lane.slots(backend) if s.get("is_processing")]


def test_client_disconnect_mid_stream_stops_the_generation(lane: Lane) -> None:
    backend = lane.backend_of(SMOL)
    budget = 1500  # with ignore_eos the model would decode all of these unless cancelled
    before = lane.metric(backend, "llamacpp:tokens_predicted_total")
    host, port = lane.stack.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request(
        "POST",
        "/v1/chat/completions",
        headers={"content-type": "application/json"},
        body=json.dumps(
            {
                "model": SMOL,
                "stream": True,
                "max_tokens": budget,
                "ignore_eos": True,
                "temperature": 0,
                "messages": [{"role": "user", "content": "Tell me a very long story about a lighthouse."}],
            }
        ),
    )
    resp = conn.getresponse()
    assert resp.status == 200
    tokens = 0
    while tokens < 5:  # the generation is under way
        line = resp.readline()
        assert line, "stream ended early"
        if line.startswith(b"data: {") and b'"content"' in line:
            tokens += 1
    [slot] = _busy(lane, backend)  # llama-server's own view: one slot decoding our request
    assert slot["next_token"][0]["n_decoded"] >= 1
    conn.sock.close()
    conn.close()
    deadline = time.monotonic() + 120  # the uncancelled generation would take ~25 s: plenty to tell apart
    while _busy(lane, backend) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _busy(lane, backend), "llama-server still generating after the client left"
    # tokens_predicted_total is counted when a slot is released: what the cancelled request decoded.
    predicted = lane.metric(backend, "llamacpp:tokens_predicted_total") - before
    assert 5 <= predicted < budget
    [seen] = lane.records(backend)
    assert seen["body"]["ignore_eos"] is True and not seen["completed"]


def test_client_disconnect_mid_fusion_stops_the_panel_generations(lane: Lane) -> None:
    budget = 1500
    backends = [lane.backend_of(SMOL), lane.backend_of(CODER)]
    before = {b: lane.metric(b, "llamacpp:tokens_predicted_total") for b in backends}
    host, port = lane.stack.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    plugin = {"id": "fusion", "analysis_models": [SMOL, CODER], "model": CODER, "max_completion_tokens": budget}
    conn.request(
        "POST",
        "/v1/chat/completions",
        headers={"content-type": "application/json"},
        body=json.dumps(
            {
                "model": "vllm-sr/auto",
                "stream": True,
                "ignore_eos": True,
                "temperature": 0,
                "plugins": [plugin],
                "messages": [{"role": "user", "content": "Compare two long stories about lighthouses."}],
            }
        ),
    )
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.readline().startswith(b": fusion")  # a progress comment: the run is under way
    deadline = time.monotonic() + 120
    while not all(_busy(lane, b) for b in backends) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_busy(lane, b) for b in backends), "both panel models should be decoding"
    conn.sock.close()
    conn.close()
    # Poll gently: llama-server checks a non-streamed request's socket only after a full second
    # without any other result (a /slots or /metrics answer counts), so polling faster than that
    # would keep the abandoned request alive (docs/llm.md).
    while any(_busy(lane, b) for b in backends) and time.monotonic() < deadline:
        time.sleep(2.0)
    assert not any(_busy(lane, b) for b in backends), "a panel generation outlived the client"
    for b in backends:
        assert lane.metric(b, "llamacpp:tokens_predicted_total") - before[b] < budget
        [seen] = lane.records(b)  # the panel call only: no judge, no synthesis after the client left
        assert seen["body"]["max_completion_tokens"] == budget and not seen["completed"]
