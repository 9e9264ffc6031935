"""Fusion end to end: real Envoy, the router's looper re-entering Envoy, simulated backends of known
behaviour (slow, failing, hanging, a judge that answers broken JSON), driven by the openai client."""

from __future__ import annotations

import json
import time
from pathlib import Path

import openai
import pytest
import yaml

from tests.integration.harness import clear_sim_requests, client, raw, sim_requests, start_stack

pytestmark = pytest.mark.envoy

SIMS = {
    "b-fast": {"latency_ms": 20},
    "b-slow": {"latency_ms": 300},
    "b-fail": {"mode": "error", "fail_status": 503},
    "b-fail2": {"mode": "error", "fail_status": 500},
    "b-hang": {"mode": "hang"},
    "b-judge": {"mode": "judge_json", "latency_ms": 30, "tps": 40, "max_tokens": 40},
    "b-broken": {"mode": "broken_json_judge"},
    "b-drop": {"mode": "drop_midstream"},
    "b-judgefail": {"mode": "error", "fail_status": 503, "fault_on": "judge"},
    "b-garbage-judge": {"malformed": "choices_strings", "fault_on": "judge"},
    "b-garbage-final": {"malformed": "int_delta", "fault_on": "final"},
    # A 200 KB answer written in 4 KB pieces, and a 600 KB one in one write (a single read() got neither whole).
    "b-big": {"answer_bytes": 200 * 1024, "write_chunk_bytes": 4096},
    "b-keyed": {"mode": "error", "fail_status": 401, "fault_on": "judge", "echo_auth": True},
}
KEY = "sk-test-keyed-0123456789abcdef"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    cfg = yaml.safe_load((Path(__file__).parent / "fusion.yaml").read_text())
    s = start_stack(tmp_path_factory.mktemp("fusion"), cfg, SIMS, env={"FUSION_TEST_KEYED_KEY": KEY})
    yield s
    s.stop()


def ask(stack, prompt, model="vllm-sr/auto", **kw):
    return client(stack).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], **kw
    )


def test_auto_enters_fusion_for_a_fusion_decision(stack):
    resp = ask(stack, "Please deliberate: is Rust faster than Go?")
    body = json.loads(resp.text)
    trace = body["fusion"]
    assert resp.headers["x-vsr-response-path"] == "fusion"
    assert resp.headers["x-vsr-selected-decision"] == "fusion_main"
    assert trace["decision"] == "fusion_main" and trace["judge_model"] == "m-judge"
    assert trace["analysis_models"] == ["m-fast", "m-slow"]
    assert [r["model"] for r in trace["responses"]] == ["m-fast", "m-slow"]
    assert trace["responses"][0]["content"].startswith("[m-fast@b-fast]")
    assert trace["analysis_status"] == "ok"
    assert set(trace["analysis"]) >= {"consensus", "contradictions", "partial_coverage", "unique_insights", "blind_spots"}
    assert trace["analysis"]["contradictions"][0]["stances"]  # OpenRouter's rich form survives
    assert trace["iterations"] == 4 and trace["failed_models"] == []
    assert trace["prompt_version"] == "fusion-v1"
    assert set(trace["latency_ms"]) == {"panel", "judge", "synthesis", "total"}
    assert trace["latency_ms"]["panel"] >= 300  # waited for the slow member
    # The synthesis (judge backend, normal answer) is the user-facing answer.
    assert body["choices"][0]["message"]["content"].startswith("[m-judge@b-judge]")
    assert body["model"] == "vllm-sr/auto"
    # usage is the sum over every call actually made
    stages = trace["usage"]
    assert body["usage"]["total_tokens"] == sum(s["total_tokens"] for s in stages.values())
    assert stages["panel"]["total_tokens"] == sum(r["usage"]["total_tokens"] for r in trace["responses"])
    assert resp.headers["x-vsr-fusion-judge"] == "m-judge"
    assert resp.headers["x-vsr-fusion-iterations"] == "4"


def test_auto_routes_normally_when_no_fusion_decision_wins(stack):
    resp = ask(stack, "hello there")
    assert resp.headers["x-vsr-response-path"] == "routed"
    assert resp.headers["x-sim-backend"] == "b-fast"


def test_fusion_slug_matches_fusion_decisions_only(stack):
    resp = ask(stack, "deliberate on this", model="vllm-sr/fusion")
    assert json.loads(resp.text)["fusion"]["decision"] == "fusion_main"
    with pytest.raises(openai.NotFoundError) as info:
        ask(stack, "hello there", model="vllm-sr/fusion")  # would be a single-model route under auto
    assert info.value.body["code"] == "no_fusion_decision_matched"


def test_openrouter_slug_is_opt_in(stack):
    resp = ask(stack, "deliberate", model="openrouter/fusion")
    assert resp.headers["x-vsr-response-path"] == "fusion"


def test_request_plugin_overrides_judge_and_panel(stack):
    resp = ask(
        stack, "deliberate please", extra_body={"plugins": [{"id": "fusion", "model": "m-fast", "analysis_models": ["m-slow"]}]}
    )
    trace = json.loads(resp.text)["fusion"]
    assert trace["decision"] == "fusion_main"
    assert trace["judge_model"] == "m-fast" and trace["analysis_models"] == ["m-slow"]


def test_plugin_builds_fusion_direct_when_no_fusion_decision_matched(stack):
    resp = ask(
        stack,
        "hello there",
        model="m-judge",
        extra_body={"plugins": [{"id": "openrouter:fusion", "analysis_models": ["m-fast", "m-slow"]}]},
    )
    trace = json.loads(resp.text)["fusion"]
    assert trace["decision"] == "fusion_direct"
    assert trace["judge_model"] == "m-judge"  # the requested model judges
    assert resp.headers["x-vsr-entry-path"] == "plugin"


@pytest.mark.parametrize(
    ("plugin", "param"),
    [
        ({"id": "fusion", "analysis_models": ["vllm-sr/fusion"]}, "plugins[0].analysis_models[0]"),
        ({"id": "fusion", "model": "openrouter/fusion", "analysis_models": ["m-fast"]}, "plugins[0].model"),
        ({"id": "fusion", "analysis_models": "m-fast"}, "plugins[0].analysis_models"),
        ({"id": "fusion", "temperature": 9}, "plugins[0].temperature"),
        ({"id": "fusion", "bogus": 1}, "plugins[0].bogus"),
        ({"id": "fusion", "analysis_models": ["nope"]}, "plugins[0].analysis_models[0]"),
    ],
)
def test_invalid_plugin_fields_and_recursion_are_refused(stack, plugin, param):
    with pytest.raises(openai.BadRequestError) as info:
        ask(stack, "deliberate", extra_body={"plugins": [plugin]})
    assert info.value.body["param"] == param


def test_on_error_fail_stops_at_the_first_panel_failure(stack):
    with pytest.raises(openai.APIStatusError) as info:
        ask(stack, "strictpanel question")
    assert info.value.status_code == 502
    body = info.value.response.json()
    assert body["error"]["code"] == "panel_model_failed" and "m-fail" in body["error"]["message"]
    assert body["fusion"]["failed_models"][0]["model"] == "m-fail"


def test_on_error_skip_continues_with_partial_evidence(stack):
    resp = ask(stack, "skipfail question")
    trace = json.loads(resp.text)["fusion"]
    assert trace["answered_models"] == ["m-fast", "m-slow"]
    assert trace["failed_models"] == [
        {"model": "m-fail", "stage": "panel", "reason": "http_503", "error": trace["failed_models"][0]["error"]}
    ]
    assert trace["iterations"] == 5  # 3 panel calls (one failed) + judge + synthesis
    assert resp.headers["x-vsr-fusion-failed-models"] == "m-fail=http_503"


def test_fewer_answers_than_min_successful_goes_on_and_says_so(stack):
    # min_successful_responses is when the judge may start; with fewer answers in the end Fusion
    # still answers from what it has, and the trace and metrics show the shortfall.
    resp = ask(stack, "quorum question")
    trace = json.loads(resp.text)["fusion"]
    assert trace["quorum"] == {"wanted": 2, "got": 1}
    assert trace["answered_models"] == ["m-fast"] and trace["analysis_status"] == "ok"


def test_the_judge_starts_once_enough_members_answered_and_stragglers_are_cancelled(stack):
    clear_sim_requests(stack)
    resp = ask(stack, "straggler question")  # m-hang never answers; min_successful_responses: 1
    trace = json.loads(resp.text)["fusion"]
    assert trace["answered_models"] == ["m-fast"] and trace["cancelled_models"] == ["m-hang"]
    assert trace["failed_models"] == []
    [hung] = sim_requests(stack, "b-hang")
    deadline = time.monotonic() + 10
    while not hung["cancelled"] and time.monotonic() < deadline:  # the backend saw the call go away
        time.sleep(0.05)
        [hung] = sim_requests(stack, "b-hang")
    assert hung["cancelled"] and not hung["completed"]


def test_broken_judge_json_still_synthesizes_and_keeps_raw_text(stack):
    clear_sim_requests(stack)
    resp = ask(stack, "brokenjudge question")
    trace = json.loads(resp.text)["fusion"]
    assert trace["analysis_status"] == "judge_not_valid_json"
    assert trace["analysis"] is None and "consensus: maybe" in trace["analysis_raw"]
    assert resp.headers["x-vsr-fusion-analysis-status"] == "judge_not_valid_json"
    # the raw analysis was passed on to synthesis, not dropped
    synth = [r for r in sim_requests(stack, "b-broken") if r["body"]["messages"][0]["role"] == "system"]
    assert "consensus: maybe" in synth[-1]["body"]["messages"][0]["content"]


def test_a_panel_backend_dying_mid_response_is_recorded_and_skipped(stack):
    resp = ask(stack, "droppanel question")
    trace = json.loads(resp.text)["fusion"]
    assert trace["answered_models"] == ["m-fast"]
    [failed] = trace["failed_models"]
    # Through Envoy the upstream reset becomes a 503 (upstream connect/reset); direct it is a broken connection.
    assert failed["model"] == "m-drop" and failed["reason"] in ("http_503", "connection_error", "stream_broken")
    assert ask(stack, "hello again").headers["x-vsr-response-path"] == "routed"  # still serving


def test_panel_time_budget_turns_a_hang_into_a_timeout_failure(stack):
    resp = ask(stack, "slowpanel question")
    trace = json.loads(resp.text)["fusion"]
    assert trace["failed_models"][0]["model"] == "m-hang" and trace["failed_models"][0]["reason"] == "timeout"


def test_judge_and_synthesis_model_down_is_a_clear_502_with_trace(stack):
    with pytest.raises(openai.APIStatusError) as info:
        ask(stack, "judgedown question")
    assert info.value.status_code == 502
    body = info.value.response.json()
    assert body["error"]["code"] == "synthesis_failed"
    trace = body["fusion"]
    assert trace["answered_models"] == ["m-fast", "m-slow"]
    assert trace["analysis_status"] == "judge_upstream_error"
    assert [(f["model"], f["stage"]) for f in trace["failed_models"]] == [("m-fail", "judge"), ("m-fail", "synthesis")]


def test_a_failed_judge_still_synthesizes_from_the_raw_panel_answers(stack):
    clear_sim_requests(stack)
    resp = ask(stack, "judgefail question")
    trace = json.loads(resp.text)["fusion"]
    assert trace["analysis_status"] == "judge_upstream_error" and trace["analysis"] is None
    assert json.loads(resp.text)["choices"][0]["message"]["content"].startswith("[m-judgefail@b-judgefail]")
    synth = [r for r in sim_requests(stack, "b-judgefail") if r["body"]["messages"][0]["role"] == "system"]
    assert "[m-fast]" in synth[-1]["body"]["messages"][0]["content"]  # the raw answers reached synthesis


def test_a_malformed_judge_answer_is_a_recorded_stage_failure(stack):
    resp = ask(stack, "garbagejudge question")  # the judge answers {"choices": ["x"]}
    trace = json.loads(resp.text)["fusion"]
    assert trace["analysis_status"] == "judge_invalid_response"
    [failed] = trace["failed_models"]
    assert failed["stage"] == "judge" and failed["reason"] == "invalid_response"


@pytest.mark.parametrize("stream", [False, True])
def test_a_malformed_synthesis_answer_is_a_502_with_trace(stack, stream):
    got, _, data = raw(
        stack.url,
        "POST",
        "/v1/chat/completions",
        json.dumps(
            {"model": "auto", "stream": stream, "messages": [{"role": "user", "content": "garbagefinal question"}]}
        ).encode(),
    )
    if stream:  # integer delta content mid-stream: an error event, then [DONE]
        assert got == 200
        events = [line[6:] for line in data.decode().splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        doc = json.loads(events[-2])
    else:
        assert got == 502
        doc = json.loads(data)
    assert doc["error"]["code"] == "synthesis_failed" and "invalid_response" in doc["error"]["message"]
    assert doc["fusion"]["failed_models"][-1]["stage"] == "synthesis"


def test_large_answers_arriving_in_pieces_are_read_whole(stack):
    resp = ask(stack, "bigpanel question")
    trace = json.loads(resp.text)["fusion"]
    big = next(r for r in trace["responses"] if r["model"] == "m-big")
    assert len(big["content"]) >= 200 * 1024 and trace["failed_models"] == []


def test_looper_sub_calls_carry_the_backend_key_and_errors_never_echo_it(stack):
    clear_sim_requests(stack)
    resp = ask(stack, "keyedpanel question")  # the judge answers 401 quoting the Authorization header
    seen = sim_requests(stack, "b-keyed")
    assert seen and all(r["headers"].get("authorization") == f"Bearer {KEY}" for r in seen)
    assert all("authorization" not in r["headers"] for r in sim_requests(stack, "b-fast"))
    assert KEY not in resp.text and "[REDACTED]" in resp.text
    failed = json.loads(resp.text)["fusion"]["failed_models"]
    assert failed[0]["stage"] == "judge" and failed[0]["reason"] == "http_401"


def test_trace_can_move_from_body_to_headers(stack):
    resp = ask(stack, "notrace question")
    assert "fusion" not in json.loads(resp.text)
    assert resp.headers["x-vsr-fusion-panel"] == "m-fast"


def test_sub_calls_are_internal_hops_and_panel_gets_no_tools(stack):
    clear_sim_requests(stack)
    resp = ask(stack, "deliberate: what is the weather in Paris?", tools=[WEATHER_TOOL])
    body = json.loads(resp.text)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"])
    for backend in ("b-fast", "b-slow"):
        [seen] = sim_requests(stack, backend)
        assert "tools" not in seen["body"] and not seen["body"].get("stream")
        assert "x-vsr-looper-token" not in seen["headers"]  # the marker never reaches a backend
    judge_calls = sim_requests(stack, "b-judge")
    assert len(judge_calls) == 2 and "tools" not in judge_calls[0]["body"] and judge_calls[1]["body"]["tools"]


def test_multi_turn_tool_history_reaches_the_panel_as_text(stack):
    clear_sim_requests(stack)
    messages = [
        {"role": "user", "content": "deliberate: weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
    ]
    resp = client(stack).chat.completions.create(model="auto", messages=messages, tools=[WEATHER_TOOL])
    assert resp.choices[0].message.content
    [seen] = sim_requests(stack, "b-fast")
    text = json.dumps(seen["body"]["messages"])
    assert "18C and sunny" in text and "get_weather" in text


def test_streaming_relays_synthesis_tokens_as_they_arrive(stack):
    started = time.monotonic()
    stream = client(stack).chat.completions.create(
        model="vllm-sr/fusion",
        messages=[{"role": "user", "content": "deliberate: explain raft"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    arrivals, chunks = [], []
    for chunk in stream:
        arrivals.append(time.monotonic() - started)
        chunks.append(chunk)
    content = [i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content]
    assert len(content) > 5
    # The judge backend streams 40 tokens at 40 tok/s: the first content chunk must arrive long
    # before the synthesis call finishes, or we are buffering.
    assert arrivals[content[-1]] - arrivals[content[0]] > 0.5
    assert chunks[content[0]].choices[0].delta.role == "assistant"
    text = "".join(chunks[i].choices[0].delta.content for i in content)
    assert text.startswith("[m-judge@b-judge]")
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish and finish[0].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0  # usage chunk last


def test_streaming_tool_call_deltas(stack):
    stream = client(stack).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "deliberate: weather in Oslo?"}], tools=[WEATHER_TOOL], stream=True
    )
    chunks = list(stream)
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].function.name == "get_weather"
    args = "".join(d.function.arguments or "" for d in deltas)
    assert json.loads(args)["city"]
    assert any(c.choices and c.choices[0].finish_reason == "tool_calls" for c in chunks)


def test_streaming_errors_end_with_an_error_event(stack):
    got, _, data = raw(
        stack.url,
        "POST",
        "/v1/chat/completions",
        json.dumps({"model": "auto", "stream": True, "messages": [{"role": "user", "content": "judgedown now"}]}).encode(),
    )
    assert got == 200
    events = [line[6:] for line in data.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "synthesis_failed"
    assert b": fusion: panel of 2 started" in data  # progress comments while the panel runs


def test_client_disconnect_cancels_in_flight_calls(stack):
    import http.client

    host, port = stack.url.removeprefix("http://").split(":")
    clear_sim_requests(stack)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    body = json.dumps({"model": "auto", "stream": True, "messages": [{"role": "user", "content": "slowpanel but leave"}]})
    conn.request("POST", "/v1/chat/completions", body=body, headers={"content-type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    resp.fp.readline()  # the first progress comment: the run is under way
    deadline = time.monotonic() + 10
    while not sim_requests(stack, "b-hang") and time.monotonic() < deadline:
        time.sleep(0.05)  # the hanging panel member has the call
    conn.sock.close()
    conn.close()
    # Proven by what the backend saw: the in-flight call went away before any answer.
    while time.monotonic() < deadline and not sim_requests(stack, "b-hang")[0]["cancelled"]:
        time.sleep(0.05)
    [hung] = sim_requests(stack, "b-hang")
    assert hung["cancelled"] and not hung["completed"]
    assert "looper_cancelled" in stack.log("router")


def test_buffered_mode_falls_back_to_one_immediate_sse_response(tmp_path):
    cfg = yaml.safe_load((Path(__file__).parent / "fusion.yaml").read_text())
    s = start_stack(tmp_path, cfg, SIMS, body_mode="BUFFERED")
    try:
        stream = client(s).chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "deliberate"}], stream=True
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("[m-judge@b-judge]")
    finally:
        s.stop()
