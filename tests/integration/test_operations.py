"""Operations end to end: metrics, logs, traces, health, hot reload and graceful drain, through a real
Envoy + the router + simulated backends, driven by the openai client (and raw HTTP where the client
would hide the wire: SSE framing, headers)."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import openai
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from router.sim.answers import build_answer
from tests.integration.harness import client, raw, sim_requests, start_stack

pytestmark = pytest.mark.envoy

EXTPROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
# Every label name the router's metrics may carry (bounded vocabularies; `le` is the histogram bucket).
LABEL_NAMES = {
    "entry",
    "decision",
    "model",
    "response_path",
    "code",
    "type",
    "name",
    "matched",
    "outcome",
    "direction",
    "stage",
    "reason",
    "status",
    "le",
    "algorithm",
    "result",
}
JUDGE_MAX_TOKENS = 40


def ops_config(drain_s: float = 15) -> dict[str, Any]:
    kw = lambda name: {"type": "keyword", "name": name}  # noqa: E731
    return {
        "global": {
            "router": {"auto_model_names": ["vllm-sr/auto", "auto"], "drain_timeout_seconds": drain_s},
            "integrations": {
                "looper": {
                    "endpoint": "http://127.0.0.1:8801/v1/chat/completions",
                    "timeout_seconds": 30,
                    "fusion": {"model_names": ["vllm-sr/fusion"]},
                }
            },
            "observability": {"tracing": {"enabled": True, "exporter": "console", "service_name": "ops-test"}},
        },
        "backends": [{"name": n, "endpoint": "http://127.0.0.1:1"} for n in ("b-fast", "b-slow", "b-fail", "b-judge")],
        "models": [
            {"name": "m-fast", "backend": "b-fast"},
            {"name": "m-slow", "backend": "b-slow"},
            {"name": "m-fail", "backend": "b-fail"},
            {"name": "m-judge", "backend": "b-judge"},
        ],
        "default_model": "m-fast",
        "routing": {
            "signals": {
                "keywords": [
                    {"name": "deliberate", "keywords": ["deliberate"]},
                    {"name": "slowfusion", "keywords": ["slowfusion"]},
                    {"name": "forbidden", "keywords": ["forbiddenword"]},
                    {"name": "reroute", "keywords": ["reroute"]},
                ]
            },
            "decisions": [
                {
                    "name": "blocked_kw",
                    "priority": 300,
                    "rules": kw("forbidden"),
                    "plugins": [{"type": "block", "configuration": {"status": 403, "code": "blocked_test"}}],
                },
                {
                    "name": "fusion_quick",
                    "priority": 200,
                    "rules": kw("deliberate"),
                    "algorithm": {"type": "fusion", "fusion": {"model": "m-judge", "analysis_models": ["m-fast", "m-fail"]}},
                },
                {
                    "name": "fusion_slow",
                    "priority": 200,
                    "rules": kw("slowfusion"),
                    "algorithm": {"type": "fusion", "fusion": {"model": "m-judge", "analysis_models": ["m-fast", "m-slow"]}},
                },
                {"name": "reroute", "priority": 100, "rules": kw("reroute"), "modelRefs": [{"model": "m-fast"}]},
                {"name": "general", "priority": 0, "modelRefs": [{"model": "m-fast"}]},
            ],
        },
    }


def sims(slow_ms: int, judge_tps: float = 0) -> dict[str, dict[str, Any]]:
    return {
        "b-fast": {"latency_ms": 5},
        "b-slow": {"latency_ms": slow_ms},
        "b-fail": {"mode": "error", "fail_status": 503},
        "b-judge": {"mode": "judge_json", "latency_ms": 5, "tps": judge_tps, "max_tokens": JUDGE_MAX_TOKENS},
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("ops"), ops_config(), sims(slow_ms=3000), log_level="debug")
    s.original_config = s.config_path.read_text()  # type: ignore[attr-defined]
    yield s
    s.stop()


# ------------------------------------------------------------------------------------------ helpers


def admin(stack, path: str) -> tuple[int, bytes]:
    status, _, body = raw(f"http://127.0.0.1:{stack.admin_port}", "GET", path)
    return status, body


def samples(stack) -> list[tuple[str, dict[str, str], float]]:
    _, text = admin(stack, "/metrics")
    return [
        (s.name, s.labels, s.value)
        for fam in text_string_to_metric_families(text.decode())
        if fam.name.startswith("fusion_router")
        for s in fam.samples
    ]


def metric(stack, name: str, /, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for n, lab, v in samples(stack) if n == name and all(lab.get(k) == val for k, val in labels.items()))


class Delta:
    """Metric values before an action, to compare after it."""

    def __init__(self, stack, *keys: tuple[str, dict[str, str]]):
        self.stack = stack
        self.before = {self._key(n, lab): metric(stack, n, **lab) for n, lab in keys}

    @staticmethod
    def _key(name: str, labels: dict[str, str]) -> str:
        return name + json.dumps(labels, sort_keys=True)

    def __call__(self, name: str, /, **labels: str) -> float:
        return metric(self.stack, name, **labels) - self.before[self._key(name, labels)]


def M(name: str, /, **labels: str) -> tuple[str, dict[str, str]]:
    return name, labels


def wait_for(what: str, check: Callable[[], Any], timeout: float = 8.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def config_status(stack) -> dict[str, Any]:
    return json.loads(admin(stack, "/config")[1])


def write_config(stack, cfg: dict[str, Any] | str) -> None:
    """Replace the config file atomically (as a ConfigMap update or an editor's save does)."""
    if not isinstance(cfg, str):
        current = yaml.safe_load(stack.original_config)
        cfg_with_ports = copy.deepcopy(cfg)
        cfg_with_ports["backends"] = current["backends"]  # keep the sims' ports
        cfg = yaml.safe_dump(cfg_with_ports, sort_keys=False)
    tmp = stack.config_path.with_suffix(".tmp")
    tmp.write_text(cfg)
    os.replace(tmp, stack.config_path)


def reloaded_to(stack, version: int) -> dict[str, Any]:
    return wait_for(f"config version {version}", lambda: (s := config_status(stack))["version"] == str(version) and s)


def restore_config(stack) -> None:
    before = int(config_status(stack)["version"])
    if stack.config_path.read_text() == stack.original_config and config_status(stack)["last_error"] is None:
        return
    write_config(stack, stack.original_config)
    wait_for("the original config back", lambda: (s := config_status(stack))["last_error"] is None and int(s["version"]) > before)


def log_events(stack) -> list[dict[str, Any]]:
    """The router's JSON log events (structlog lines carry an `event`; console spans do not)."""
    out = []
    for line in stack.log("router").splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "event" in doc:
                out.append(doc)
    return out


def spans(stack) -> list[dict[str, Any]]:
    out = []
    for line in stack.log("router").splitlines():
        line = line.strip()
        if line.startswith("{") and '"context"' in line:
            doc = json.loads(line)
            if "name" in doc and "context" in doc:
                out.append(doc)
    return out


def chat(stack, prompt: str, model: str = "vllm-sr/auto", request_id: str | None = None, **kw: Any):
    headers = {"x-request-id": request_id} if request_id else {}
    return client(stack).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], extra_headers=headers, **kw
    )


def marker() -> str:
    """A word that appears in one prompt only: it must never reach a label or (by default) a log line."""
    return f"secretword{uuid.uuid4().hex[:10]}"


def health_status(stack, service: str = "") -> int:
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status


# ------------------------------------------------------------------------------------------ metrics


def test_routed_request_metrics(stack):
    d = Delta(
        stack,
        M("fusion_router_requests_total", entry="auto", decision="general", model="m-fast", response_path="routed"),
        M("fusion_router_signal_latency_ms_count", type="keyword", name="deliberate"),
        M("fusion_router_signal_matches_total", type="keyword", name="deliberate", matched="false"),
        M("fusion_router_signal_matches_total", type="keyword", name="reroute", matched="true"),
        M("fusion_router_signals_and_decision_ms_count", entry="auto"),
        M("fusion_router_decision_latency_ms_count", response_path="routed"),
    )
    resp = chat(stack, f"hello {marker()}")
    assert resp.headers["x-vsr-response-path"] == "routed" and resp.headers["x-sim-backend"] == "b-fast"
    assert d("fusion_router_requests_total", entry="auto", decision="general", model="m-fast", response_path="routed") == 1
    assert d("fusion_router_signal_latency_ms_count", type="keyword", name="deliberate") == 1
    assert d("fusion_router_signal_matches_total", type="keyword", name="deliberate", matched="false") == 1
    assert d("fusion_router_signal_matches_total", type="keyword", name="reroute", matched="true") == 0
    assert d("fusion_router_signals_and_decision_ms_count", entry="auto") == 1
    assert d("fusion_router_decision_latency_ms_count", response_path="routed") == 1
    chat(stack, "please reroute")
    assert d("fusion_router_signal_matches_total", type="keyword", name="reroute", matched="true") == 1


def test_fusion_request_metrics(stack):
    d = Delta(
        stack,
        M("fusion_router_requests_total", entry="auto", decision="fusion_quick", model="m-judge", response_path="fusion"),
        *(M("fusion_router_fusion_stage_seconds_count", stage=s) for s in ("panel", "judge", "synthesis")),
        M("fusion_router_fusion_panel_failures_total", model="m-fail", reason="http_503"),
        M("fusion_router_fusion_analysis_total", status="ok"),
        M("fusion_router_fusion_runs_total", decision="fusion_quick", outcome="ok"),
        M("fusion_router_upstream_latency_seconds_count", model="m-fast", outcome="ok"),
        M("fusion_router_upstream_latency_seconds_count", model="m-fail", outcome="error"),
        M("fusion_router_upstream_latency_seconds_count", model="m-judge", outcome="ok"),
        M("fusion_router_upstream_ttft_seconds_count", model="m-judge"),
        M("fusion_router_tokens_total", model="m-fast", direction="in"),
        M("fusion_router_tokens_total", model="m-judge", direction="out"),
    )
    stream = client(stack).chat.completions.create(
        model="vllm-sr/auto", messages=[{"role": "user", "content": f"please deliberate on {marker()}"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.startswith("[m-judge@b-judge]")
    assert d("fusion_router_requests_total", entry="auto", decision="fusion_quick", model="m-judge", response_path="fusion") == 1
    for stage in ("panel", "judge", "synthesis"):
        assert d("fusion_router_fusion_stage_seconds_count", stage=stage) == 1, stage
    assert d("fusion_router_fusion_panel_failures_total", model="m-fail", reason="http_503") == 1
    assert d("fusion_router_fusion_analysis_total", status="ok") == 1
    assert d("fusion_router_fusion_runs_total", decision="fusion_quick", outcome="ok") == 1
    assert d("fusion_router_upstream_latency_seconds_count", model="m-fast", outcome="ok") == 1
    assert d("fusion_router_upstream_latency_seconds_count", model="m-fail", outcome="error") == 1
    assert d("fusion_router_upstream_latency_seconds_count", model="m-judge", outcome="ok") == 2  # judge + synthesis
    assert d("fusion_router_upstream_ttft_seconds_count", model="m-judge") == 1  # the streamed synthesis
    assert d("fusion_router_tokens_total", model="m-fast", direction="in") > 0
    assert d("fusion_router_tokens_total", model="m-judge", direction="out") > 0


def test_blocked_request_metrics(stack):
    d = Delta(
        stack,
        M("fusion_router_errors_total", code="blocked_test"),
        M("fusion_router_requests_total", entry="auto", decision="blocked_kw", model="none", response_path="blocked"),
        M("fusion_router_signal_matches_total", type="keyword", name="forbidden", matched="true"),
    )
    with pytest.raises(openai.PermissionDeniedError) as info:
        chat(stack, f"tell me the forbiddenword {marker()}")
    assert info.value.body["code"] == "blocked_test"
    assert d("fusion_router_errors_total", code="blocked_test") == 1
    assert d("fusion_router_requests_total", entry="auto", decision="blocked_kw", model="none", response_path="blocked") == 1
    assert d("fusion_router_signal_matches_total", type="keyword", name="forbidden", matched="true") == 1


def test_label_sets_are_bounded_and_in_flight_returns_to_zero(stack):
    rid = str(uuid.uuid4())
    word = marker()
    chat(stack, f"deliberate about {word}", request_id=rid)
    chat(stack, f"just chat about {word}", request_id=rid)
    wait_for("no stream in flight", lambda: metric(stack, "fusion_router_in_flight_streams") == 0)
    _, text = admin(stack, "/metrics")
    assert word not in text.decode() and rid not in text.decode()
    for name, labels, _ in samples(stack):
        assert set(labels) <= LABEL_NAMES, (name, labels)
        for value in labels.values():
            assert not UUID.search(value), (name, labels)
            assert "secretword" not in value and " " not in value, (name, labels)


# ------------------------------------------------------------------------------------------ logs and traces


def test_logs_one_event_per_decision_point_and_no_prompt_text(stack):
    word = marker()
    ids = {k: str(uuid.uuid4()) for k in ("routed", "blocked", "fusion")}
    chat(stack, f"chat about {word}", request_id=ids["routed"])
    with pytest.raises(openai.PermissionDeniedError):
        chat(stack, f"forbiddenword {word}", request_id=ids["blocked"])
    chat(stack, f"deliberate {word}", request_id=ids["fusion"])
    events = log_events(stack)
    by_id = lambda rid, name: [e for e in events if e.get("request_id") == rid and e["event"] == name]  # noqa: E731

    routed = by_id(ids["routed"], "request_routed")
    assert len(routed) == 1
    assert routed[0]["decision"] == "general" and routed[0]["model"] == "m-fast" and routed[0]["entry"] == "auto"
    assert "latency_ms" in routed[0] and "signals" in routed[0]
    blocked = by_id(ids["blocked"], "request_blocked")
    assert len(blocked) == 1 and blocked[0]["decision"] == "blocked_kw" and blocked[0]["signals"] == ["keyword:forbidden"]
    fusion = by_id(ids["fusion"], "request_looper")
    assert len(fusion) == 1 and fusion[0]["decision"] == "fusion_quick" and fusion[0]["model"] == "m-judge"
    assert fusion[0]["signals"] == ["keyword:deliberate"] and "latency_ms" in fusion[0]
    done = by_id(ids["fusion"], "looper_done")
    assert len(done) == 1 and done[0]["failed"] == 1 and done[0]["algorithm"] == "fusion" and done[0]["outcome"] == "fused"
    # The looper's sub-calls carry the client's request id, so one grep finds the whole Fusion run.
    subcalls = [e for e in by_id(ids["fusion"], "request_routed") if e["entry"] == "internal"]
    assert {e["model"] for e in subcalls} == {"m-fast", "m-fail", "m-judge"}

    text = stack.log("router")
    assert word not in text  # not in logs, not in span attributes, even at --log-level debug
    assert not [e for e in events if e["event"] == "request_prompt"]


def test_log_prompts_flag_logs_the_prompt_at_debug(stack):
    cfg = ops_config()
    cfg["global"]["router"]["log_prompts"] = True
    version = int(config_status(stack)["version"])
    write_config(stack, cfg)
    try:
        reloaded_to(stack, version + 1)
        word, rid = marker(), str(uuid.uuid4())
        chat(stack, f"hello {word}", request_id=rid)
        prompts = [e for e in log_events(stack) if e["event"] == "request_prompt" and e.get("request_id") == rid]
        assert len(prompts) == 1
        assert prompts[0]["level"] == "debug" and word in prompts[0]["prompt"]
    finally:
        restore_config(stack)


def test_tracing_spans_continue_the_incoming_trace(stack):
    trace_id = uuid.uuid4().hex
    parent = uuid.uuid4().hex[:16]
    resp = client(stack).chat.completions.with_raw_response.create(
        model="vllm-sr/auto",
        messages=[{"role": "user", "content": "deliberate on tracing"}],
        extra_headers={"traceparent": f"00-{trace_id}-{parent}-01"},
    )
    assert resp.headers["x-vsr-response-path"] == "fusion"
    mine = wait_for(
        "the request's spans",
        lambda: (
            [s for s in spans(stack) if s["context"]["trace_id"] == f"0x{trace_id}"]
            if any(
                s["name"] == "router.request"
                and s["context"]["trace_id"] == f"0x{trace_id}"
                and s.get("parent_id") == f"0x{parent}"
                for s in spans(stack)
            )
            else None
        ),
    )
    names = [s["name"] for s in mine]
    assert {"router.request", "router.signals", "looper.call"} <= set(names)
    calls = [s for s in mine if s["name"] == "looper.call"]
    assert sorted(s["attributes"]["llm.model"] for s in calls) == ["m-fail", "m-fast", "m-judge", "m-judge"]
    assert all(s["resource"]["attributes"]["service.name"] == "ops-test" for s in mine)
    # Each sub-call carried the trace on to the backend (through Envoy), as a child of its looper.call span.
    call_ids = {s["context"]["span_id"].removeprefix("0x") for s in calls}
    for backend in ("b-fast", "b-judge"):
        seen = [r["headers"].get("traceparent", "") for r in sim_requests(stack, backend)]
        ours = [h for h in seen if h.split("-")[1:2] == [trace_id]]
        assert ours, (backend, seen[-3:])
        assert all(h.split("-")[2] in call_ids for h in ours)


# ------------------------------------------------------------------------------------------ hot reload


def test_hot_reload_swaps_policy_while_in_flight_fusion_finishes_on_the_old_one(stack):
    version = int(config_status(stack)["version"])
    assert chat(stack, "please reroute").headers["x-sim-backend"] == "b-fast"
    result: dict[str, Any] = {}

    def slow_fusion() -> None:
        try:
            result["resp"] = chat(stack, "slowfusion: take your time")
        except Exception as exc:
            result["error"] = exc

    inflight = threading.Thread(target=slow_fusion)
    inflight.start()
    try:
        wait_for("the slow Fusion run in flight", lambda: metric(stack, "fusion_router_in_flight_streams") >= 1)
        new = ops_config()
        decisions = new["routing"]["decisions"]
        slow = next(d for d in decisions if d["name"] == "fusion_slow")
        slow["name"], slow["algorithm"]["fusion"]["model"] = "fusion_slow_v2", "m-fast"
        next(d for d in decisions if d["name"] == "reroute")["modelRefs"] = [{"model": "m-judge"}]
        write_config(stack, new)
        status = reloaded_to(stack, version + 1)
        assert status["last_error"] is None and "fusion_slow_v2" in status["decisions"]
        resp = chat(stack, "please reroute")  # the next request: new policy
        assert resp.headers["x-sim-backend"] == "b-judge" and resp.headers["x-vsr-selected-model"] == "m-judge"
        assert inflight.is_alive(), "the slow Fusion request should still be in flight"
        inflight.join(30)
        assert "error" not in result, result.get("error")
        old = result["resp"]
        trace = json.loads(old.text)["fusion"]
        assert old.headers["x-vsr-selected-decision"] == "fusion_slow"
        assert trace["decision"] == "fusion_slow" and trace["judge_model"] == "m-judge"  # the old policy's
        assert trace["answered_models"] == ["m-fast", "m-slow"] and trace["latency_ms"]["panel"] >= 2500
        reloads = [e for e in log_events(stack) if e["event"] == "config_reloaded" and e["version"] == str(version + 1)]
        assert reloads and reloads[0]["reason"] == "file_changed"
        assert metric(stack, "fusion_router_config_version") == version + 1
    finally:
        inflight.join(30)
        restore_config(stack)


def test_sighup_reloads(stack):
    version = int(config_status(stack)["version"])
    d = Delta(stack, M("fusion_router_config_reloads_total", outcome="ok"))
    stack.procs["router"].send_signal(signal.SIGHUP)  # same file content: SIGHUP still reloads
    reloaded_to(stack, version + 1)
    assert d("fusion_router_config_reloads_total", outcome="ok") == 1
    assert any(
        e["event"] == "config_reloaded" and e["reason"] == "sighup" and e["version"] == str(version + 1)
        for e in log_events(stack)
    )


def test_broken_config_keeps_serving_and_reports_the_error(stack):
    version = int(config_status(stack)["version"])
    d = Delta(stack, M("fusion_router_config_reloads_total", outcome="error"))
    broken = ops_config()
    next(d for d in broken["routing"]["decisions"] if d["name"] == "reroute")["modelRefs"] = [{"model": "m-nope"}]
    write_config(stack, broken)
    try:
        status = wait_for("the reload error", lambda: (s := config_status(stack))["last_error"] and s)
        assert str(stack.config_path) in status["last_error"]
        assert "routing.decisions[3].modelRefs[0].model" in status["last_error"] and "m-nope" in status["last_error"]
        assert status["version"] == str(version) and status["last_error_at"]
        assert metric(stack, "fusion_router_config_last_reload_failed") == 1
        assert d("fusion_router_config_reloads_total", outcome="error") >= 1
        # Still serving, on the old policy, and still ready.
        assert chat(stack, "please reroute").headers["x-sim-backend"] == "b-fast"
        assert admin(stack, "/readyz")[0] == 200
        failed = [e for e in log_events(stack) if e["event"] == "config_reload_failed"]
        assert failed and failed[-1]["level"] == "error" and "m-nope" in failed[-1]["error"]
    finally:
        restore_config(stack)
    status = config_status(stack)
    assert status["last_error"] is None and int(status["version"]) == version + 1
    assert metric(stack, "fusion_router_config_last_reload_failed") == 0


# ------------------------------------------------------------------------------------------ drain


def _sse_events(data: bytes) -> list[str]:
    return [line[5:].strip() for line in data.decode().splitlines() if line.startswith("data:")]


def test_sigterm_drains_a_streaming_fusion_request(tmp_path):
    grace = 15
    s = start_stack(tmp_path, ops_config(drain_s=grace), sims(slow_ms=1500, judge_tps=40))
    try:
        assert health_status(s) == health_pb2.HealthCheckResponse.SERVING
        assert health_status(s, EXTPROC_SERVICE) == health_pb2.HealthCheckResponse.SERVING
        result: dict[str, Any] = {}

        def stream() -> None:
            body = json.dumps(
                {
                    "model": "vllm-sr/auto",
                    "stream": True,
                    "messages": [{"role": "user", "content": "slowfusion while we shut down"}],
                }
            ).encode()
            result["status"], result["headers"], result["body"] = raw(s.url, "POST", "/v1/chat/completions", body)
            result["done_at"] = time.monotonic()

        t = threading.Thread(target=stream)
        t.start()
        # SIGTERM mid-panel: the judge and synthesis calls must still get through Envoy to the draining router.
        wait_for("the Fusion stream in flight", lambda: metric(s, "fusion_router_in_flight_streams") >= 1)
        time.sleep(0.3)
        router = s.procs["router"]
        router.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        wait_for("NOT_SERVING", lambda: health_status(s) == health_pb2.HealthCheckResponse.NOT_SERVING)
        assert health_status(s, EXTPROC_SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert admin(s, "/readyz")[0] == 503
        assert metric(s, "fusion_router_draining") == 1
        assert t.is_alive(), "the Fusion request should still be running while the router drains"
        assert router.poll() is None

        t.join(grace + 5)
        assert router.wait(grace + 5) == 0
        assert result["status"] == 200 and result["headers"]["x-vsr-response-path"] == "fusion"
        events = _sse_events(result["body"])
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert not [c for c in chunks if "error" in c]
        content = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
        # The full synthesis answer: what the judge backend streamed for the request it got.
        synthesis = [r for r in sim_requests(s, "b-judge") if r["body"].get("stream")][-1]["body"]
        expected = build_answer(
            synthesis, served_model=synthesis["model"], backend="b-judge", default_max_tokens=JUDGE_MAX_TOKENS, judge="valid"
        ).content
        assert content == expected
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        assert result["done_at"] - sent < grace
        events = [e["event"] for e in log_events(s)]
        assert (
            events.index("router_draining")
            < events.index("looper_done")
            < events.index("router_drained")
            < events.index("router_stopped")
        )
    finally:
        s.stop()
