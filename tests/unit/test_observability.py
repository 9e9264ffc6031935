"""router/observability (metrics recording, log redaction, tracing, admin endpoints), the config
watcher and the drain sequence, without Envoy: metric values are read from the process registry
before and after each action."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
import yaml
from aiohttp.test_utils import TestClient, TestServer
from grpc_health.v1 import health, health_pb2
from prometheus_client import REGISTRY

from router.app import App
from router.config import parse_config
from router.config.schema import TracingSettings
from router.decisions.policy import compile_policy
from router.extproc.server import SERVICE_NAME
from router.extproc.stream import Phases
from router.looper.fusion import FusionTrace, GateTrace, Quorum
from router.looper.trace import FailedModel, TraceError
from router.observability import metrics as M
from router.observability import record, tracing
from router.observability.admin import build_admin
from router.observability.logging import REDACTED, configure_logging, redact_secrets
from router.openai.types import Usage
from router.reload import POLL_ENV, ConfigWatcher, poll_interval
from router.serve import drain
from router.signals.base import SignalResult
from router.state import Entry, RequestState, ResponsePath

CONFIG: dict[str, Any] = {
    "backends": [{"name": "b1", "endpoint": "http://127.0.0.1:9"}],
    "models": [{"name": "m1", "backend": "b1"}, {"name": "m2", "backend": "b1"}],
    "default_model": "m1",
    "routing": {
        "signals": {"keywords": [{"name": "kw", "keywords": ["hello"]}]},
        "decisions": [
            {"name": "greet", "priority": 10, "rules": {"type": "keyword", "name": "kw"}, "modelRefs": [{"model": "m2"}]},
            {"name": "general", "priority": 0, "modelRefs": [{"model": "m1"}]},
        ],
    },
}


def value(name: str, /, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    def __init__(self) -> None:
        self.before = {(s.name, tuple(sorted(s.labels.items()))): s.value for fam in REGISTRY.collect() for s in fam.samples}

    def __call__(self, name: str, /, **labels: str) -> float:
        return value(name, **labels) - self.before.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def logs():
    """structlog + stdlib logging into a buffer, restored afterwards (no logger cached on a test stream)."""
    buf = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def configure(fmt: str = "json", lvl: str = "info") -> None:
        configure_logging(fmt, lvl, stream=buf)
        structlog.configure(cache_logger_on_first_use=False)

    def lines() -> list[dict[str, Any]]:
        out = [json.loads(line) for line in buf.getvalue().splitlines() if line.startswith("{")]
        buf.seek(0)
        buf.truncate()
        return out

    configure()
    yield SimpleNamespace(buf=buf, configure=configure, lines=lines)
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def policy(cfg: dict[str, Any] | None = None):
    return compile_policy(parse_config(cfg or CONFIG), version="1")


# ------------------------------------------------------------------------------------------ record


def test_request_done_counts_by_entry_decision_model_path():
    p = policy()
    state = RequestState(policy=p, request_id="0b7f5c1e-0000-4000-8000-000000000001")
    state.entry, state.decision, state.model = Entry.AUTO, p.config.routing.decisions[0], p.models["m2"]
    state.response_path = ResponsePath.ROUTED
    d = Delta()
    record.request_done(state)
    assert d("fusion_router_requests_total", entry="auto", decision="greet", model="m2", response_path="routed") == 1
    assert d("fusion_router_decision_latency_ms_count", response_path="routed") == 1


def test_request_done_counts_errors_by_code_and_labels_unknown_parts_safely():
    state = RequestState(policy=policy())
    state.response_path, state.error_code = ResponsePath.ERROR, "model_not_found"
    d = Delta()
    record.request_done(state)
    assert d("fusion_router_errors_total", code="model_not_found") == 1
    assert d("fusion_router_requests_total", entry="none", decision="default", model="none", response_path="error") == 1
    blocked = RequestState(policy=policy())
    blocked.entry, blocked.response_path, blocked.error_code = Entry.MODEL, ResponsePath.BLOCKED, "blocked_test"
    record.request_done(blocked)
    assert d("fusion_router_errors_total", code="blocked_test") == 1


def test_request_done_logs_looper_and_error_decision_points(logs):
    p = policy()
    state = RequestState(policy=p, request_id="rid-1")
    state.entry, state.decision, state.model = Entry.LOOPER, p.config.routing.decisions[0], p.models["m1"]
    state.response_path, state.algorithm = ResponsePath.LOOPER, "fusion"
    state.signals = {"keyword:kw": SignalResult("keyword", "kw", True)}
    record.request_done(state)
    err = RequestState(policy=p, request_id="rid-2", path="/v1/chat/completions")
    err.entry, err.response_path, err.error_code = Entry.AUTO, ResponsePath.ERROR, "invalid_json"
    record.request_done(err)
    routed = RequestState(policy=p, request_id="rid-3")
    routed.response_path = ResponsePath.ROUTED  # logged by the pipeline (request_routed), not here
    record.request_done(routed)
    lines = logs.lines()
    fusion = next(e for e in lines if e["event"] == "request_looper")
    assert fusion["request_id"] == "rid-1" and fusion["decision"] == "greet" and fusion["model"] == "m1"
    assert fusion["algorithm"] == "fusion" and fusion["entry"] == "fusion"
    assert fusion["signals"] == ["keyword:kw"] and "latency_ms" in fusion
    error = next(e for e in lines if e["event"] == "request_error")
    assert error["request_id"] == "rid-2" and error["error"] == "invalid_json"
    assert not [e for e in lines if e.get("request_id") == "rid-3"]


def test_signals_done_records_latency_matches_and_errors():
    d = Delta()
    record.signals_done(
        "auto",
        {
            "keyword:a": SignalResult("keyword", "obs_a", True, latency_ms=0.4),
            "pii:b": SignalResult("pii", "obs_b", False, latency_ms=12.0, error="timeout"),
        },
        12.5,
    )
    assert d("fusion_router_signals_and_decision_ms_count", entry="auto") == 1
    assert d("fusion_router_signal_latency_ms_count", type="keyword", name="obs_a") == 1
    assert d("fusion_router_signal_latency_ms_sum", type="pii", name="obs_b") == pytest.approx(12.0)
    assert d("fusion_router_signal_matches_total", type="keyword", name="obs_a", matched="true") == 1
    assert d("fusion_router_signal_matches_total", type="pii", name="obs_b", matched="false") == 1
    assert d("fusion_router_signal_errors_total", type="pii", name="obs_b") == 1
    assert d("fusion_router_signal_errors_total", type="keyword", name="obs_a") == 0


def test_upstream_call_ttft_only_when_streamed_and_tokens_by_direction():
    d = Delta()
    record.upstream_call("obs-m", "ok", 1.5, 0.2, prompt_tokens=10, completion_tokens=3)
    record.upstream_call("obs-m", "timeout", 30.0, None)
    assert d("fusion_router_upstream_latency_seconds_count", model="obs-m", outcome="ok") == 1
    assert d("fusion_router_upstream_latency_seconds_count", model="obs-m", outcome="timeout") == 1
    assert d("fusion_router_upstream_ttft_seconds_count", model="obs-m") == 1
    assert d("fusion_router_upstream_ttft_seconds_sum", model="obs-m") == pytest.approx(0.2)
    assert d("fusion_router_tokens_total", model="obs-m", direction="in") == 10
    assert d("fusion_router_tokens_total", model="obs-m", direction="out") == 3


def _fusion_trace(**kw: object) -> FusionTrace:
    base = {
        "algorithm": "fusion",
        "decision": "obs_decision",
        "outcome": "fused",
        "iterations": 4,
        "answered_models": [],
        "failed_models": [
            FailedModel(model="obs-p1", stage="panel", reason="http_503", error="x"),
            FailedModel(model="obs-p2", stage="panel", reason="timeout", error="y"),
        ],
        "latency_ms": {"panel": 1500.0, "judge": 250.0, "synthesis": 750.0, "total": 2500.0},
        "usage": {"panel": Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15)},
        "judge_model": "j",
        "analysis_models": ["obs-p1", "obs-p2", "obs-p3"],
        "prompt_version": "fusion-v1",
        "analysis_status": "judge_not_valid_json",
        "quorum": Quorum(wanted=3, got=1),
    }
    return FusionTrace(**{**base, **kw})


def test_fusion_done_stages_failures_analysis_quorum():
    d = Delta()
    record.fusion_done("obs_decision", _fusion_trace())
    assert d("fusion_router_fusion_stage_seconds_count", stage="panel") == 1
    assert d("fusion_router_fusion_stage_seconds_sum", stage="panel") == pytest.approx(1.5)
    assert d("fusion_router_fusion_stage_seconds_count", stage="total") == 0
    assert d("fusion_router_fusion_panel_failures_total", model="obs-p1", reason="http_503") == 1
    assert d("fusion_router_fusion_panel_failures_total", model="obs-p2", reason="timeout") == 1
    assert d("fusion_router_fusion_analysis_total", status="judge_not_valid_json") == 1
    assert d("fusion_router_fusion_runs_total", decision="obs_decision", outcome="ok") == 1
    # Fewer answers than min_successful_responses: Fusion went on, and the shortfall is counted.
    assert d("fusion_router_fusion_quorum_failures_total", decision="obs_decision") == 1
    # A run that never reached the judge counts no analysis.
    failed = _fusion_trace(
        analysis_status="not_run",
        outcome="all_panels_failed",
        quorum=Quorum(wanted=3, got=0),
        error=TraceError(stage="panel", reason="all_panels_failed", message="m"),
    )
    record.fusion_done("obs_decision", failed)
    assert d("fusion_router_fusion_analysis_total", status="not_run") == 0
    assert d("fusion_router_fusion_runs_total", decision="obs_decision", outcome="all_panels_failed") == 1


def test_looper_done_counts_every_algorithm():
    d = Delta()
    record.looper_done("remom", "obs_remom", _fusion_trace(outcome="synthesized"))
    assert d("fusion_router_looper_runs_total", algorithm="remom", decision="obs_remom", outcome="synthesized") == 1
    assert d("fusion_router_looper_calls_count", algorithm="remom") == 1
    assert d("fusion_router_looper_calls_sum", algorithm="remom") == 4
    assert d("fusion_router_looper_stage_seconds_count", algorithm="remom", stage="judge") == 1
    assert d("fusion_router_looper_call_failures_total", algorithm="remom", model="obs-p2", reason="timeout") == 1
    assert d("fusion_router_looper_tokens_total", algorithm="remom", direction="in") == 10


def test_gate_outcomes_and_savings_are_counted():
    d = Delta()
    gate = GateTrace(model="g", method="hybrid", confidence=0.4, threshold=0.8, passed=False)
    fused = _fusion_trace(gate=gate, usage={"panel": Usage(total_tokens=1000)})
    assert record.fusion_done("obs_gate", fused) is None
    assert d("fusion_router_fusion_gate_total", decision="obs_gate", result="fused") == 1
    gated = _fusion_trace(
        gate=gate.model_copy(update={"passed": True, "calls_saved": 4}), outcome="gated", usage={"gate": Usage(total_tokens=100)}
    )
    assert record.fusion_done("obs_gate", gated) == 900  # against the running mean of fused runs
    assert d("fusion_router_fusion_gate_total", decision="obs_gate", result="gated") == 1
    assert d("fusion_router_fusion_gate_saved_calls_total", decision="obs_gate") == 4
    assert d("fusion_router_fusion_gate_saved_tokens_total", decision="obs_gate") == 900


def test_config_and_drain_gauges():
    d = Delta()
    record.config_reloaded(False)
    assert value("fusion_router_config_last_reload_failed") == 1
    assert d("fusion_router_config_reloads_total", outcome="error") == 1
    record.config_reloaded(True, 7)
    assert value("fusion_router_config_last_reload_failed") == 0
    assert value("fusion_router_config_version") == 7
    assert abs(value("fusion_router_config_last_reload_success_timestamp_seconds") - time.time()) < 5
    record.draining(True)
    assert value("fusion_router_draining") == 1
    record.draining(False)
    assert value("fusion_router_draining") == 0


def test_in_flight_reads_the_gauge():
    base = record.in_flight()
    M.IN_FLIGHT.inc()
    try:
        assert record.in_flight() == base + 1
    finally:
        M.IN_FLIGHT.dec()


def test_metric_label_names_are_bounded():
    # store / op: fixed vocabularies; tenant: only tenants named in global.tenants.policies (a budget needs one).
    allowed = {
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
        "algorithm",
        "result",
        "store",
        "op",
        "tenant",
        "kind",
    }
    for obj in vars(M).values():
        if hasattr(obj, "_labelnames"):
            assert set(obj._labelnames) <= allowed, obj
            assert obj._name.startswith("fusion_router_")


# ------------------------------------------------------------------------------------------ logging


def test_redact_secrets_blanks_credentials_at_any_level():
    event = {
        "event": "x",
        "Authorization": "Bearer sk-1",
        "api_key": "k",
        "headers": {"x-api-key": "k", "accept": "*/*", "nested": {"cookie": "c"}},
        "model": "m1",
    }
    out = redact_secrets(None, "info", event)
    assert out["Authorization"] == REDACTED and out["api_key"] == REDACTED
    assert out["headers"]["x-api-key"] == REDACTED and out["headers"]["accept"] == "*/*"
    assert out["headers"]["nested"]["cookie"] == REDACTED
    assert out["model"] == "m1"


def test_configure_logging_renders_library_records_as_json_and_filters_debug(logs):
    structlog.get_logger("t").debug("hidden_debug")
    structlog.get_logger("t").info("shown", authorization="secret")
    logging.getLogger("grpc.test").warning("library says %s", "hi")
    logging.getLogger("grpc.test").debug("library debug stays off")
    assert len(logs.buf.getvalue().splitlines()) == 2
    lines = logs.lines()
    assert [e["event"] for e in lines] == ["shown", "library says hi"]
    assert lines[0]["authorization"] == REDACTED and lines[0]["level"] == "info"
    assert lines[1]["logger"] == "grpc.test" and lines[1]["level"] == "warning"
    logs.configure("console", "debug")
    structlog.get_logger("t").debug("now_visible")
    logging.getLogger("grpc.test").debug("library debug stays off")
    text = logs.buf.getvalue()
    assert "now_visible" in text and "library debug" not in text


# ------------------------------------------------------------------------------------------ tracing


def test_tracing_is_a_noop_when_off():
    assert tracing.setup_tracing(TracingSettings(enabled=False)) is False
    assert not tracing.enabled()
    with tracing.span("x", parent_headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}) as s:
        assert s is None
    assert tracing.inject({}) == {}


def test_tracing_continues_incoming_context_and_injects_it(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    assert tracing.setup_tracing(TracingSettings(enabled=True, exporter="console", service_name="unit"))
    try:
        trace_id, parent = "1" * 32, "2" * 16
        with tracing.span("router.request", parent_headers={"traceparent": f"00-{trace_id}-{parent}-01"}, a=1, b=None) as outer:
            with tracing.span("router.signals"):
                pass
            # Headers without a trace context do not start a new trace: the span nests under the current one.
            with tracing.span("looper.call", parent_headers={"x-request-id": "r"}):
                headers = tracing.inject({})
        assert outer is not None
    finally:
        tracing.shutdown_tracing()
    assert not tracing.enabled()
    spans = {s["name"]: s for s in (json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{"))}
    assert set(spans) == {"router.request", "router.signals", "looper.call"}
    assert {s["context"]["trace_id"] for s in spans.values()} == {f"0x{trace_id}"}
    assert spans["router.request"]["parent_id"] == f"0x{parent}"
    request_id = spans["router.request"]["context"]["span_id"]
    assert spans["router.signals"]["parent_id"] == request_id and spans["looper.call"]["parent_id"] == request_id
    assert spans["router.request"]["attributes"] == {"a": 1}
    assert spans["router.request"]["resource"]["attributes"]["service.name"] == "unit"
    tp = headers["traceparent"].split("-")
    assert tp[1] == trace_id and f"0x{tp[2]}" == spans["looper.call"]["context"]["span_id"]


# ------------------------------------------------------------------------------------------ admin


async def _get(app, watcher, path: str) -> tuple[int, Any]:
    async with TestClient(TestServer(build_admin(app, watcher))) as c:
        resp = await c.get(path)
        body = await resp.text()
        return resp.status, (json.loads(body) if resp.content_type == "application/json" else body)


async def test_admin_endpoints():
    app = SimpleNamespace(
        draining=False,
        ready=False,
        policy=SimpleNamespace(version="3"),
        config_status=lambda: {"version": "3", "last_error": None},
    )
    watcher = SimpleNamespace(status=lambda: {"sha256": "abc", "reloads": {"ok": 2, "error": 0}})
    assert (await _get(app, watcher, "/healthz"))[0] == 200
    assert await _get(app, watcher, "/readyz") == (503, {"status": "starting"})
    app.ready = True
    assert await _get(app, watcher, "/readyz") == (200, {"status": "ready", "config_version": "3"})
    status, body = await _get(app, watcher, "/config")
    assert status == 200 and body == {
        "version": "3",
        "last_error": None,
        "sha256": "abc",
        "reloads": {"ok": 2, "error": 0},
        "draining": False,
    }
    status, text = await _get(app, watcher, "/metrics")
    assert status == 200 and "fusion_router_in_flight_streams" in text
    app.draining = True
    assert await _get(app, watcher, "/readyz") == (503, {"status": "draining"})
    assert (await _get(app, None, "/config"))[1]["draining"] is True


# ------------------------------------------------------------------------------------------ config watcher


def _write(path: Path, cfg: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    os.replace(tmp, path)


async def test_watcher_reload_swaps_on_success_and_keeps_old_on_failure(tmp_path):
    path = tmp_path / "router.yaml"
    _write(path, CONFIG)
    app = App.from_file(path)
    await app.start()
    watcher = ConfigWatcher(app, interval=0)
    old = app.policy
    in_flight = Phases(app)  # a request whose stream opened before the reload, as the server creates it
    assert watcher.status()["sha256"] and watcher.generation == 1

    broken = yaml.safe_load(yaml.safe_dump(CONFIG))
    broken["routing"]["decisions"][0]["modelRefs"] = [{"model": "nope"}]
    _write(path, broken)
    d = Delta()
    assert await watcher.reload("test") is False
    assert app.policy is old
    assert str(path) in app.last_reload_error and "routing.decisions[0].modelRefs[0].model" in app.last_reload_error
    assert d("fusion_router_config_reloads_total", outcome="error") == 1
    assert value("fusion_router_config_last_reload_failed") == 1
    assert watcher.status()["last_error_at"] and watcher.status()["reloads"] == {"ok": 0, "error": 1}

    _write(path, {**CONFIG, "default_model": "m2"})
    assert await watcher.reload("test") is True
    assert app.policy is not old and app.policy.version == "2" and app.config.default_model == "m2"
    assert app.last_reload_error is None and watcher.status()["last_error_at"] is None
    assert value("fusion_router_config_last_reload_failed") == 0
    assert value("fusion_router_config_version") == 2
    assert d("fusion_router_config_reloads_total", outcome="ok") == 1

    # A request that started before the swap keeps its policy; one that starts now gets the new one.
    assert in_flight.state.policy is old and in_flight.state.policy.config.default_model == "m1"
    assert Phases(app).state.policy is app.policy and app.policy is not old
    await app.close()


async def test_watcher_polls_the_file_and_waits_for_writes_to_settle(tmp_path):
    path = tmp_path / "router.yaml"
    _write(path, CONFIG)
    app = App.from_file(path)
    await app.start()
    watcher = ConfigWatcher(app, interval=0.05)
    watcher.start()
    try:
        _write(path, {**CONFIG, "default_model": "m2"})
        for _ in range(100):
            if app.policy.version == "2":
                break
            await asyncio.sleep(0.02)
        assert app.policy.version == "2" and app.config.default_model == "m2"
        await asyncio.sleep(0.4)  # unchanged content: no further reloads
        assert app.policy.version == "2"
    finally:
        await watcher.stop()
        await app.close()


def test_poll_interval_from_env(monkeypatch):
    monkeypatch.delenv(POLL_ENV, raising=False)
    assert poll_interval() == 1.0
    monkeypatch.setenv(POLL_ENV, "0")
    assert poll_interval() == 0.0
    monkeypatch.setenv(POLL_ENV, "2.5")
    assert poll_interval() == 2.5
    monkeypatch.setenv(POLL_ENV, "soon")
    assert poll_interval() == 1.0


# ------------------------------------------------------------------------------------------ drain


class FakeServer:
    def __init__(self) -> None:
        self.stopped_with: float | None = None

    async def stop(self, grace: float) -> None:
        self.stopped_with = grace


class FakeWatcher:
    stopped = False

    async def stop(self) -> None:
        self.stopped = True


def _drain_app(grace: float) -> SimpleNamespace:
    cfg = parse_config({**CONFIG, "global": {"router": {"drain_timeout_seconds": grace}}})
    return SimpleNamespace(draining=False, config=cfg)


async def _health(servicer, service: str = "") -> int:
    resp = await servicer.Check(health_pb2.HealthCheckRequest(service=service), None)
    return resp.status


async def test_drain_waits_for_in_flight_streams_then_stops():
    # A 60 s grace the drain must not need: it returns when the last stream ends (the wait_for below
    # only turns a broken drain into a failure instead of a stuck suite).
    app, server, watcher = _drain_app(60), FakeServer(), FakeWatcher()
    servicer = health.aio.HealthServicer()
    M.IN_FLIGHT.inc()
    seen: dict[str, Any] = {}

    async def finish_stream() -> None:
        await asyncio.sleep(0.3)
        seen["draining"] = app.draining
        seen["health"] = await _health(servicer)
        seen["health_svc"] = await _health(servicer, SERVICE_NAME)
        seen["stopped_early"] = server.stopped_with is not None
        M.IN_FLIGHT.dec()

    task = asyncio.create_task(finish_stream())
    await asyncio.wait_for(drain(app, server, servicer, watcher, asyncio.Event()), 30)
    assert task.done() and M.IN_FLIGHT._value.get() == 0  # it waited for the stream, and no longer
    await task
    assert seen == {
        "draining": True,
        "health": health_pb2.HealthCheckResponse.NOT_SERVING,
        "health_svc": health_pb2.HealthCheckResponse.NOT_SERVING,
        "stopped_early": False,
    }
    assert server.stopped_with == 0 and watcher.stopped
    assert value("fusion_router_draining") == 1
    record.draining(False)


async def test_drain_gives_up_after_the_grace_period_and_on_a_second_signal():
    M.IN_FLIGHT.inc()
    try:
        app, server = _drain_app(0.3), FakeServer()
        await asyncio.wait_for(drain(app, server, health.aio.HealthServicer(), FakeWatcher(), asyncio.Event()), 30)
        assert server.stopped_with == 0  # the stream is still open: the grace ran out and it is cancelled

        # A second signal ends the wait although the grace (an hour) has not run out.
        app, server, force = _drain_app(3600), FakeServer(), asyncio.Event()
        asyncio.get_running_loop().call_later(0.2, force.set)
        await asyncio.wait_for(drain(app, server, health.aio.HealthServicer(), FakeWatcher(), force), 30)
        assert force.is_set() and server.stopped_with == 0
    finally:
        M.IN_FLIGHT.dec()
        record.draining(False)


# ------------------------------------------------------------------------------------------ workers


def test_workers_share_the_looper_secret(monkeypatch):
    import router.serve as serve_mod

    spawned: list[dict[str, str]] = []

    class FakePopen:
        def __init__(self, argv, env=None, **_kw):
            spawned.append(env)
            self.argv = argv

    monkeypatch.setattr(serve_mod.subprocess, "Popen", FakePopen)
    monkeypatch.setattr(
        serve_mod.sys, "argv", ["fusion-router", "serve", "--workers", "3", "--config", "x.yaml", "--grpc-port", "6000"]
    )
    monkeypatch.delenv(serve_mod.LOOPER_SECRET_ENV, raising=False)
    secret = serve_mod._looper_secret()
    assert len(secret) >= 32
    pool = serve_mod.Workers(SimpleNamespace(workers=3, grpc_port=6000), secret)
    pool.start()
    workers = pool.procs
    assert len(workers) == 2 and all(env[serve_mod.LOOPER_SECRET_ENV] == secret for env in spawned)
    # Worker i serves gRPC on its own port (Envoy lists them all), once each.
    assert workers[0].argv[-6:] == ["--config", "x.yaml", "--workers", "1", "--grpc-port", "6001"]
    assert workers[1].argv[-2:] == ["--grpc-port", "6002"] and workers[1].argv.count("--grpc-port") == 1
    assert serve_mod.LOOPER_SECRET_ENV not in os.environ
    # A worker takes the parent's secret and keeps it out of its own environment.
    monkeypatch.setenv(serve_mod.LOOPER_SECRET_ENV, secret)
    assert serve_mod._looper_secret() == secret
    assert serve_mod.LOOPER_SECRET_ENV not in os.environ
