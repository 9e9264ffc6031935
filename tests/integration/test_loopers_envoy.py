"""The looper toolbox end to end: the official openai client -> the real Envoy -> the router, whose looper
sub-calls re-enter Envoy's internal listener -> simulated backends of known behaviour (token confidence,
no logprobs, down, hanging). For each algorithm (adaptive Fusion, confidence escalation, ReMoM): every
entry path streamed and not, failures, gate pass/fail and client-disconnect cancellation, each proven
by what the backends' request logs say they were asked, answered and reported. One stack per module.
"""

from __future__ import annotations

import http.client
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from tests.integration.harness import clear_sim_requests, client, raw, sim_requests, start_stack

pytestmark = pytest.mark.envoy

SIMS: dict[str, dict[str, Any]] = {
    "b-small": {"confidence": 0.3, "latency_ms": 5},
    "b-medium": {"confidence": 0.5, "latency_ms": 5},
    "b-large": {"confidence": 0.95, "latency_ms": 5},
    "b-sure": {"confidence": 0.97, "latency_ms": 5},
    "b-unsure": {"confidence": 0.3, "latency_ms": 5},
    # Ignores `logprobs: true` like servers that lack them; its self-verification verdict is 0.9.
    "b-nolp": {"logprobs": False, "confidence": 0.9, "latency_ms": 5},
    "b-down": {"mode": "error", "fail_status": 503},
    "b-down2": {"mode": "error", "fail_status": 500},
    "b-hang": {"mode": "hang"},
    # Judge prompts get an analysis; synthesis calls stream at a pace the client can see.
    "b-judge": {"mode": "judge_json", "latency_ms": 5, "tps": 400, "max_tokens": 24},
}
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
LOOPER_HEADERS = (
    "algorithm",
    "decision",
    "models-used",
    "iterations",
    "latency-ms",
    "prompt-tokens",
    "completion-tokens",
    "total-tokens",
    "outcome",
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    cfg = yaml.safe_load((Path(__file__).parent / "loopers.yaml").read_text())
    s = start_stack(tmp_path_factory.mktemp("loopers"), cfg, SIMS)
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _fresh_logs(stack):
    clear_sim_requests(stack)


# --------------------------------------------------------------------------- helpers


def ask(stack, prompt: str, model: str = "vllm-sr/auto", **kw: Any) -> Any:
    return client(stack).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], **kw
    )


def seen(stack) -> dict[str, list[dict[str, Any]]]:
    """Every chat-completions call each backend received, oldest first."""
    return {name: [r for r in sim_requests(stack, name) if r["path"] == "/v1/chat/completions"] for name in SIMS}


def calls(log: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """How many calls each backend got (backends that got none left out)."""
    return {name: len(entries) for name, entries in log.items() if entries}


def reported(log: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """The usage the backends reported in the answers they sent, added up."""
    answered = [r for entries in log.values() for r in entries if r["completed"] and r["usage"]]
    return {k: sum(r["usage"][k] for r in answered) for k in USAGE_KEYS}


def usage_of(doc: dict[str, Any] | None) -> dict[str, int]:
    assert doc is not None
    return {k: doc[k] for k in USAGE_KEYS}


def stage_sum(trace: dict[str, Any]) -> dict[str, int]:
    return {k: sum(s[k] for s in trace["usage"].values()) for k in USAGE_KEYS}


def sse(data: bytes) -> tuple[list[str], list[Any]]:
    """(comment lines, data events) of an SSE body; ``[DONE]`` stays a string."""
    lines = data.decode().splitlines()
    comments = [line for line in lines if line.startswith(":")]
    events = [line[6:] for line in lines if line.startswith("data: ")]
    return comments, [e if e == "[DONE]" else json.loads(e) for e in events]


def stream_raw(stack, prompt: str, model: str = "vllm-sr/auto", **body: Any) -> tuple[int, dict[str, str], list[str], list[Any]]:
    status, headers, data = raw(
        stack.url,
        "POST",
        "/v1/chat/completions",
        json.dumps({"model": model, "stream": True, "messages": [{"role": "user", "content": prompt}], **body}).encode(),
    )
    comments, events = sse(data)
    return status, headers, comments, events


def check_looper_headers(headers: Any, trace: dict[str, Any], usage: dict[str, int], algorithm: str) -> None:
    got = {h: headers.get(f"x-vsr-looper-{h}") for h in LOOPER_HEADERS}
    assert got["algorithm"] == algorithm and got["decision"] == trace["decision"]
    assert got["outcome"] == trace["outcome"] and int(got["iterations"]) == trace["iterations"]
    assert [int(got[f"{k.split('_')[0]}-tokens"]) for k in USAGE_KEYS] == [usage[k] for k in USAGE_KEYS]
    assert float(got["latency-ms"]) > 0


def wait_for(predicate, what: str, limit: float = 15.0) -> None:
    """Poll until ``predicate()`` holds (a liveness bound for the backends' logs, not a timing assertion)."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.05)


# --------------------------------------------------------------------------- every entry path, stream and not

PLAIN = "what is the raft consensus protocol?"  # matches no looper decision
ALGORITHMS: dict[str, dict[str, Any]] = {
    "fusion": {  # adaptive Fusion whose gate is confident: one call
        "keyword": "gated",
        "decision": "adaptive",
        "outcome": "gated",
        "answerer": "m-sure",
        "calls": {"b-sure": 1},
        "plugin": (
            "m-judge",
            {"id": "fusion", "analysis_models": ["m-sure", "m-large"], "gate": {"model": "m-sure", "threshold": 0.9}},
        ),
        "plugin_calls": {"b-sure": 1},
    },
    "confidence": {  # 0.3 -> 0.5 -> 0.95 against 0.9: the third tier answers
        "keyword": "escalate",
        "decision": "cascade",
        "outcome": "accepted",
        "answerer": "m-large",
        "calls": {"b-small": 1, "b-medium": 1, "b-large": 1},
        "plugin": ("m-small", {"id": "confidence", "models": ["m-small", "m-large"], "threshold": 0.9}),
        "plugin_calls": {"b-small": 1, "b-large": 1},
    },
    "remom": {  # rounds of 3 and 2 round-robin over small/medium, synthesis by large
        "keyword": "rounds",
        "decision": "rounds",
        "outcome": "synthesized",
        "answerer": "m-large",
        "calls": {"b-small": 3, "b-medium": 2, "b-large": 1},
        "plugin": (
            "m-small",
            {"id": "remom", "models": ["m-small", "m-medium"], "breadth_schedule": [2, 1], "synthesis_model": "m-large"},
        ),
        "plugin_calls": {"b-small": 2, "b-medium": 1, "b-large": 1},
    },
}
ENTRIES = ("auto", "slug", "plugin")


def _entry_request(algorithm: str, entry: str) -> tuple[str, str, dict[str, Any], str, str, dict[str, int]]:
    """(model, prompt, extra body, expected decision, expected x-vsr-entry-path, expected calls per backend)."""
    a = ALGORITHMS[algorithm]
    prompt = f"{a['keyword']}: {PLAIN}"
    if entry == "auto":
        return "vllm-sr/auto", prompt, {}, a["decision"], "auto", a["calls"]
    if entry == "slug":
        return f"vllm-sr/{algorithm}", prompt, {}, a["decision"], algorithm, a["calls"]
    model, plugin = a["plugin"]
    return model, PLAIN, {"plugins": [plugin]}, f"{algorithm}_direct", "plugin", a["plugin_calls"]


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_every_algorithm_on_every_entry_path(stack, algorithm, entry):
    model, prompt, extra, decision, entry_label, expected = _entry_request(algorithm, entry)
    resp = ask(stack, prompt, model=model, extra_body=extra or None)
    body = json.loads(resp.text)
    trace = body[algorithm]
    assert resp.status_code == 200
    assert resp.headers["x-vsr-response-path"] == algorithm and resp.headers["x-vsr-entry-path"] == entry_label
    assert trace["algorithm"] == algorithm and trace["decision"] == decision
    assert trace["outcome"] == ALGORITHMS[algorithm]["outcome"] and trace.get("error") is None
    answerer = ALGORITHMS[algorithm]["answerer"]
    assert body["choices"][0]["message"]["content"].startswith(f"[{answerer}@b-{answerer.removeprefix('m-')}]")
    assert body["model"] == model
    log = seen(stack)
    assert calls(log) == expected  # exactly the calls the algorithm needs, nothing else
    assert trace["iterations"] == sum(expected.values())
    # usage: what the backends reported, summed; per stage in the trace; in the headers
    assert usage_of(body["usage"]) == reported(log) == stage_sum(trace)
    check_looper_headers(resp.headers, trace, body["usage"], algorithm)
    assert set(trace["latency_ms"]) >= {"total"}
    assert all(r["headers"].get("x-vsr-looper-token") is None for entries in log.values() for r in entries)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_every_algorithm_streams_on_every_entry_path(stack, algorithm, entry):
    model, prompt, extra, decision, entry_label, expected = _entry_request(algorithm, entry)
    resp = client(stack).chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body=extra or None,
    )
    assert resp.headers["x-vsr-response-path"] == algorithm and resp.headers["x-vsr-entry-path"] == entry_label
    chunks = list(resp.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    answerer = ALGORITHMS[algorithm]["answerer"]
    assert text.startswith(f"[{answerer}@b-{answerer.removeprefix('m-')}]")
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == "stop"
    trace = finish[0].model_extra[algorithm]  # the trace rides on the finish chunk
    assert trace["decision"] == decision and trace["outcome"] == ALGORITHMS[algorithm]["outcome"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None  # the usage chunk comes last
    log = seen(stack)
    assert calls(log) == expected and trace["iterations"] == sum(expected.values())
    assert chunks[-1].usage.model_dump(include=set(USAGE_KEYS)) == reported(log) == stage_sum(trace)


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_streams_end_with_done_after_progress_comments(stack, algorithm):
    status, _, comments, events = stream_raw(stack, f"{ALGORITHMS[algorithm]['keyword']}: {PLAIN}")
    assert status == 200 and events[-1] == "[DONE]"
    assert comments[0] == f": {algorithm}: started" and len(comments) > 1
    assert not any(isinstance(e, dict) and "error" in e for e in events)


def test_a_request_plugin_overrides_the_matched_decision_knobs(stack):
    # The `cascade` decision asks for 0.9; the plugin lowers it to 0.4 for this request only.
    resp = ask(stack, f"escalate: {PLAIN}", extra_body={"plugins": [{"id": "confidence", "threshold": 0.4}]})
    trace = json.loads(resp.text)["confidence"]
    assert trace["decision"] == "cascade" and trace["threshold"] == 0.4
    assert [(a["model"], a["accepted"]) for a in trace["attempts"]] == [("m-small", False), ("m-medium", True)]
    assert calls(seen(stack)) == {"b-small": 1, "b-medium": 1}
    assert resp.headers["x-vsr-selected-model"] == "m-medium"


def test_a_slug_that_matches_no_decision_of_its_algorithm_is_a_404(stack):
    for algorithm in ALGORITHMS:
        with pytest.raises(openai.NotFoundError) as info:
            ask(stack, PLAIN, model=f"vllm-sr/{algorithm}")
        assert info.value.body["code"] == f"no_{algorithm}_decision_matched"
    assert calls(seen(stack)) == {}  # never a silent single-model route


# --------------------------------------------------------------------------- confidence escalation


def test_confidence_trace_records_every_tier_with_real_scores(stack):
    resp = ask(stack, f"escalate: {PLAIN}")
    trace = json.loads(resp.text)["confidence"]
    assert trace["escalation_order"] == ["m-small", "m-medium", "m-large"]  # by declared size, not file order
    assert trace["method"] == "hybrid" and trace["threshold"] == 0.9
    attempts = trace["attempts"]
    assert [(a["model"], a["tier"], a["accepted"], a["reason"]) for a in attempts] == [
        ("m-small", 1, False, "below_threshold"),
        ("m-medium", 2, False, "below_threshold"),
        ("m-large", 3, True, "above_threshold"),
    ]
    for a, want in zip(attempts, (0.3, 0.5, 0.95)):
        assert a["confidence"] == pytest.approx(want, abs=1e-3) and a["tokens_scored"] > 0
    assert trace["accepted_model"] == "m-large" and resp.headers["x-vsr-selected-model"] == "m-large"
    assert set(trace["usage"]) == {"tier1", "tier2", "tier3"}
    log = seen(stack)
    for backend, attempt in zip(("b-small", "b-medium", "b-large"), attempts):
        [call] = log[backend]
        assert call["body"]["logprobs"] is True and call["body"]["top_logprobs"] == 2  # every tier asked for logprobs
        assert attempt["usage"] == call["usage"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_tier_that_is_down_is_skipped_to_the_next(stack, stream):
    if stream:
        status, _, comments, events = stream_raw(stack, "tierdown please")
        assert status == 200 and events[-1] == "[DONE]"
        trace = next(e["confidence"] for e in events[:-1] if e.get("choices") and e["choices"][0].get("finish_reason"))
        assert any("m-down failed (http_503); escalating" in c for c in comments)
    else:
        trace = json.loads(ask(stack, "tierdown please").text)["confidence"]
    assert [a["reason"] for a in trace["attempts"]] == ["failed:http_503", "above_threshold"]
    assert trace["failed_models"] == [
        {"model": "m-down", "stage": "tier1", "reason": "http_503", "error": trace["failed_models"][0]["error"]}
    ]
    assert trace["accepted_model"] == "m-large" and trace["iterations"] == 2
    assert calls(seen(stack)) == {"b-down": 1, "b-large": 1}


@pytest.mark.parametrize("stream", [False, True])
def test_on_error_fail_stops_at_the_failed_tier_with_a_502_naming_it(stack, stream):
    if stream:
        status, _, _, events = stream_raw(stack, "tierstrict please")
        assert status == 200 and events[-1] == "[DONE]"
        doc = events[-2]  # the error event comes right before [DONE]
    else:
        with pytest.raises(openai.APIStatusError) as info:
            ask(stack, "tierstrict please")
        assert info.value.status_code == 502
        doc = info.value.response.json()
        assert info.value.response.headers["x-vsr-looper-outcome"] == "tier_failed"
    assert doc["error"]["code"] == "tier_failed" and "m-down" in doc["error"]["message"]
    assert doc["confidence"]["error"]["stage"] == "tier1" and doc["confidence"]["attempts"][0]["model"] == "m-down"
    assert calls(seen(stack)) == {"b-down": 1}  # the next tier was never asked


@pytest.mark.parametrize("stream", [False, True])
def test_every_tier_down_is_a_502_with_the_trace(stack, stream):
    if stream:
        status, _, _, events = stream_raw(stack, "alltiersdown please")
        assert status == 200 and events[-1] == "[DONE]"
        doc = events[-2]
        assert not any(e.get("choices") for e in events[:-2] if isinstance(e, dict))  # no content before the error
    else:
        with pytest.raises(openai.APIStatusError) as info:
            ask(stack, "alltiersdown please")
        assert info.value.status_code == 502
        doc = info.value.response.json()
    assert doc["error"]["code"] == "all_tiers_failed" and doc["error"]["type"] == "upstream_error"
    trace = doc["confidence"]
    assert [(a["model"], a["reason"]) for a in trace["attempts"]] == [
        ("m-down", "failed:http_503"),
        ("m-down2", "failed:http_500"),
    ]
    assert trace["outcome"] == "all_tiers_failed" and trace["iterations"] == 2
    assert calls(seen(stack)) == {"b-down": 1, "b-down2": 1}


def test_a_backend_without_logprobs_falls_back_to_self_verification(stack):
    resp = ask(stack, "verifytier please")
    body = json.loads(resp.text)
    trace = body["confidence"]
    [attempt] = trace["attempts"]
    assert attempt["model"] == "m-nolp" and attempt["accepted"] and attempt["method"] == "self_verify"
    assert attempt["confidence"] == pytest.approx(0.9) and attempt["reason"] == "above_threshold"
    assert trace["iterations"] == 2 and set(trace["usage"]) == {"tier1", "verify:m-nolp"}
    [answer, verdict] = seen(stack)["b-nolp"]
    assert answer["body"]["logprobs"] is True  # asked, and the backend ignored it
    assert '"confidence"' in verdict["body"]["messages"][-1]["content"]  # the model graded its own answer
    assert "logprobs" not in verdict["body"]
    assert usage_of(body["usage"]) == reported(seen(stack))
    assert body["choices"][0]["message"]["content"].startswith("[m-nolp@b-nolp]")


def test_a_backend_without_logprobs_can_be_accepted_as_is(stack):
    trace = json.loads(ask(stack, "acceptnolp please").text)["confidence"]
    [attempt] = trace["attempts"]
    assert attempt["accepted"] and attempt["confidence"] is None
    assert attempt["reason"] == "accepted_without_evidence:no_logprobs"
    assert calls(seen(stack)) == {"b-nolp": 1}  # no verification call


# --------------------------------------------------------------------------- ReMoM


def test_remom_rounds_see_the_previous_round_and_the_trace_shows_them(stack):
    body = json.loads(ask(stack, f"rounds: {PLAIN}").text)
    trace = body["remom"]
    assert trace["breadth_schedule"] == [3, 2] and trace["synthesis_model"] == "m-large"
    assert [r["models"] for r in trace["rounds"]] == [["m-small", "m-medium", "m-small"], ["m-small", "m-medium"]]
    assert [(r["answered"], r["failed"], r["cancelled"]) for r in trace["rounds"]] == [(3, 0, 0), (2, 0, 0)]
    assert set(trace["usage"]) == {"round1", "round2", "synthesis"}
    round1 = trace["rounds"][0]["responses"]
    log = seen(stack)
    second = [r for r in log["b-small"] + log["b-medium"] if "Other models answered" in json.dumps(r["body"])]
    assert len(second) == 2  # round 2's calls carry round 1's answers
    for call in second:
        context = call["body"]["messages"][-1]["content"]
        assert all(r["content"] in context for r in round1)
    [synthesis] = log["b-large"]
    assert "Latest answers" in synthesis["body"]["messages"][0]["content"]
    assert not synthesis["body"].get("stream")  # a non-streaming client: nothing to relay


def test_remom_streams_the_synthesis_live(stack):
    status, _, comments, events = stream_raw(stack, f"rounds: {PLAIN}")
    assert status == 200 and events[-1] == "[DONE]"
    deltas = [e for e in events[:-1] if e.get("choices") and e["choices"][0]["delta"].get("content")]
    assert len(deltas) > 3  # token by token, not one buffered chunk
    assert any(c.startswith(": remom: round 2/2") for c in comments)
    [synthesis] = seen(stack)["b-large"]
    assert synthesis["body"]["stream"] is True


def test_a_round_past_its_timeout_is_recorded_and_the_run_goes_on(stack):
    body = json.loads(ask(stack, "roundslow please").text)
    trace = body["remom"]
    [round1] = trace["rounds"]
    assert (round1["answered"], round1["failed"]) == (1, 1)
    assert [(f["model"], f["stage"], f["reason"]) for f in trace["failed_models"]] == [("m-hang", "round1", "timeout")]
    assert trace["outcome"] == "synthesized" and trace["iterations"] == 3
    wait_for(lambda: seen(stack)["b-hang"][0]["cancelled"], "the timed-out call to go away")
    log = seen(stack)
    [hung] = log["b-hang"]
    assert hung["cancelled"] and not hung["completed"]  # the backend saw the call abandoned
    assert calls(log) == {"b-small": 1, "b-hang": 1, "b-large": 1}
    assert usage_of(body["usage"]) == reported(log)


@pytest.mark.parametrize("stream", [False, True])
def test_every_call_of_the_first_round_down_is_a_502(stack, stream):
    if stream:
        status, _, _, events = stream_raw(stack, "roundsdown please")
        assert status == 200 and events[-1] == "[DONE]"
        doc = events[-2]
    else:
        with pytest.raises(openai.APIStatusError) as info:
            ask(stack, "roundsdown please")
        assert info.value.status_code == 502
        doc = info.value.response.json()
    assert doc["error"]["code"] == "all_rounds_failed"
    assert doc["remom"]["rounds"][0]["failed"] == 2 and doc["remom"]["error"]["stage"] == "round1"
    assert calls(seen(stack)) == {"b-down": 2}  # no synthesis from nothing


# --------------------------------------------------------------------------- adaptive Fusion


def test_a_confident_gate_answers_alone_with_one_call(stack):
    resp = ask(stack, f"gated: {PLAIN}")
    body = json.loads(resp.text)
    trace = body["fusion"]
    gate = trace["gate"]
    assert trace["outcome"] == "gated" and trace["iterations"] == 1
    assert gate["model"] == "m-sure" and gate["passed"] and gate["method"] == "hybrid"
    assert gate["confidence"] == pytest.approx(0.97, abs=1e-3) and gate["threshold"] == 0.9
    assert gate["calls_saved"] == 3  # panel of 2 + judge + synthesis
    assert calls(seen(stack)) == {"b-sure": 1}
    [call] = seen(stack)["b-sure"]
    assert call["body"]["logprobs"] is True and "tools" not in call["body"]
    assert resp.headers["x-vsr-looper-models-used"] == "m-sure" and resp.headers["x-vsr-fusion-iterations"] == "1"


@pytest.mark.parametrize("stream", [False, True])
def test_an_unsure_gate_runs_the_panel_and_its_answer_is_reused(stack, stream):
    if stream:
        status, _, comments, events = stream_raw(stack, f"unsure: {PLAIN}", stream_options={"include_usage": True})
        assert status == 200 and events[-1] == "[DONE]"
        trace = next(e["fusion"] for e in events[:-1] if e.get("choices") and e["choices"][0].get("finish_reason"))
        usage = events[-2]["usage"]
        assert any("not confident" in c for c in comments)
        deltas = [e for e in events[:-1] if e.get("choices") and e["choices"][0]["delta"].get("content")]
        assert len(deltas) > 3  # the synthesis is relayed token by token
    else:
        resp = ask(stack, f"unsure: {PLAIN}")
        body = json.loads(resp.text)
        trace, usage = body["fusion"], body["usage"]
        check_looper_headers(resp.headers, trace, usage, "fusion")
    assert trace["outcome"] == "fused" and not trace["gate"]["passed"]
    assert trace["gate"]["confidence"] == pytest.approx(0.3, abs=1e-3) and trace["gate"]["calls_saved"] == 0
    assert [(r["model"], r["from_gate"]) for r in trace["responses"]] == [("m-unsure", True), ("m-large", False)]
    assert trace["analysis_status"] == "ok" and trace["quorum"] == {"wanted": 2, "got": 2}
    log = seen(stack)
    # the gate's answer stood in for its panel call: 1 + 1 + judge + synthesis, not 1 + 2 + 2
    assert calls(log) == {"b-unsure": 1, "b-large": 1, "b-judge": 2} and trace["iterations"] == 4
    assert set(trace["usage"]) == {"gate", "panel", "judge", "synthesis"}
    assert usage_of(usage) == reported(log) == stage_sum(trace)


def test_a_gate_without_logprobs_verifies_itself(stack):
    trace = json.loads(ask(stack, f"gatenolp: {PLAIN}").text)["fusion"]
    gate = trace["gate"]
    assert trace["outcome"] == "gated" and gate["passed"] and gate["method"] == "self_verify"
    assert gate["confidence"] == pytest.approx(0.9) and "no_logprobs" in gate["reason"]
    log = seen(stack)
    assert calls(log) == {"b-nolp": 2} and trace["iterations"] == 2  # the answer, then the verdict
    assert '"confidence"' in log["b-nolp"][1]["body"]["messages"][-1]["content"]


def test_a_gate_without_logprobs_can_run_the_panel_instead(stack):
    trace = json.loads(ask(stack, f"gatefuse: {PLAIN}").text)["fusion"]
    gate = trace["gate"]
    assert trace["outcome"] == "fused" and not gate["passed"] and gate["confidence"] is None
    assert gate["reason"] == "no_logprobs"
    assert calls(seen(stack)) == {"b-nolp": 1, "b-large": 1, "b-judge": 2}  # the gate answer reused, no verdict call
    assert trace["responses"][0]["from_gate"] is True


def test_a_gate_that_is_down_falls_through_to_the_panel(stack):
    resp = ask(stack, f"gatedown: {PLAIN}")
    trace = json.loads(resp.text)["fusion"]
    gate = trace["gate"]
    assert not gate["passed"] and gate["reason"] == "gate_failed:http_503" and gate["confidence"] is None
    assert trace["outcome"] == "fused" and trace["answered_models"] == ["m-large"]
    assert [(f["model"], f["stage"]) for f in trace["failed_models"]] == [("m-down", "gate"), ("m-down", "panel")]
    # nothing to reuse: the panel asks the gate model again (and it fails again)
    assert calls(seen(stack)) == {"b-down": 2, "b-large": 1, "b-judge": 2} and trace["iterations"] == 5


# --------------------------------------------------------------------------- client disconnect


def _leave_mid_stream(stack, prompt: str, backend: str, in_flight: int) -> None:
    """Stream ``prompt``, wait until ``backend`` holds ``in_flight`` calls, then drop the connection."""
    host, port = stack.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(
        "POST",
        "/v1/chat/completions",
        headers={"content-type": "application/json"},
        body=json.dumps({"model": "vllm-sr/auto", "stream": True, "messages": [{"role": "user", "content": prompt}]}),
    )
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.readline().startswith(b": ")  # the first progress comment: the run is under way
    wait_for(lambda: len(seen(stack)[backend]) == in_flight, f"{in_flight} call(s) in flight on {backend}")
    conn.sock.close()
    conn.close()
    wait_for(lambda: all(r["cancelled"] for r in seen(stack)[backend]), f"{backend}'s calls to be cancelled")


@pytest.mark.parametrize(
    ("prompt", "in_flight", "never_asked"),
    [
        ("gatehang: leave now", 1, ("b-large", "b-judge")),  # adaptive Fusion: the gate call; no panel after it
        ("tierhang: leave now", 1, ("b-large",)),  # confidence: tier 1; tier 2 never asked
        ("roundshang: leave now", 2, ("b-large",)),  # ReMoM: both round-1 calls; no synthesis
    ],
    ids=["fusion-gate", "confidence", "remom"],
)
def test_client_disconnect_cancels_the_in_flight_calls(stack, prompt, in_flight, never_asked):
    _leave_mid_stream(stack, prompt, "b-hang", in_flight)
    # A sync point through the same stack, then the logs: the abandoned run made no further call.
    assert ask(stack, PLAIN).headers["x-vsr-response-path"] == "routed"
    log = seen(stack)
    assert [(r["cancelled"], r["completed"]) for r in log["b-hang"]] == [(True, False)] * in_flight
    assert all(not log[b] for b in never_asked)
    assert Counter(name for name, entries in log.items() for _ in entries) == Counter({"b-hang": in_flight, "b-small": 1})
