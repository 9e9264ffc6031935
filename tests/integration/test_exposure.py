"""What a client (or anything else on the network) can reach and learn, through the real Envoy:

* client-sent ``x-vsr-*`` headers are never echoed back (errors, blocks, /v1/models, Fusion, routed);
* the debug header is ignored unless ``global.router.allow_debug_header`` is on;
* with a shared secret configured, a ``Process`` stream without it is refused (UNAUTHENTICATED) before
  anything runs, while the whole flow through an Envoy that sends it works;
* ``serve`` binds loopback by default.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from router._pb.envoy.config.core.v3 import base_pb2 as core
from router._pb.envoy.extensions.filters.http.ext_proc.v3 import (
    processing_mode_pb2 as pm,
)
from router._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from router._pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from router.config import load_config
from router.envoyconf import EnvoyPorts, build_envoy_config
from router.local import envoy_binary, free_port, stop_process
from tests.integration.harness import (
    clear_sim_requests,
    client,
    raw,
    sim_requests,
    start_stack,
)

pytestmark = pytest.mark.envoy

CHAT = "/v1/chat/completions"
SECRET_ENV = "FR_TEST_EXT_PROC_SECRET"
SECRET = "s3cret-for-tests-0123456789abcdef"
FORGED = {
    "x-vsr-selected-model": "forged-model",
    "x-vsr-selected-decision": "forged-decision",
    "x-vsr-entry-path": "forged-entry",
    "x-vsr-matched-signals": "forged-signals",
    "x-vsr-response-path": "forged-path",
    "x-vsr-cluster": "b-slow",
}


def exposure_config(**router: Any) -> dict[str, Any]:
    cfg = yaml.safe_load((Path(__file__).parent / "fusion.yaml").read_text())
    cfg["global"]["router"].update(router)
    cfg["routing"]["signals"]["keywords"].append({"name": "forbidden", "keywords": ["forbiddenword"]})
    cfg["routing"]["decisions"].insert(
        0,
        {
            "name": "blocked",
            "priority": 1000,
            "rules": {"type": "keyword", "name": "forbidden"},
            "plugins": [{"type": "block", "configuration": {"status": 403, "code": "blocked_test"}}],
        },
    )
    return cfg


SIMS = {"b-judge": {"mode": "judge_json"}}


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """No secret, debug header not allowed (the default)."""
    s = start_stack(tmp_path_factory.mktemp("plain"), exposure_config(), SIMS)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """The router wants the shared secret from $FR_TEST_EXT_PROC_SECRET; the Stack's Envoy sends it."""
    cfg = exposure_config(allow_debug_header=True, ext_proc_secret_env=SECRET_ENV)
    s = start_stack(tmp_path_factory.mktemp("guarded"), cfg, SIMS, env={SECRET_ENV: SECRET})
    yield s
    s.stop()


def chat(model: str, text: str) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": text}]}).encode()


# ------------------------------------------------------------------------------------------ echoes

PATHS = {
    "unsupported_path_404": ("GET", "/v2/anything", None, 404, "error"),
    "bad_json_400": ("POST", CHAT, b"{nope", 400, "error"),
    "unknown_model_404": ("POST", CHAT, chat("gpt-17", "hi"), 404, "error"),
    "blocked_403": ("POST", CHAT, chat("auto", "say forbiddenword"), 403, "blocked"),
    "models": ("GET", "/v1/models", None, 200, "models"),
    "fusion": ("POST", CHAT, chat("auto", "please deliberate"), 200, "fusion"),
    "routed": ("POST", CHAT, chat("auto", "hello there"), 200, "routed"),
}


@pytest.mark.parametrize("case", list(PATHS))
def test_client_vsr_headers_are_never_echoed(plain, case):
    method, path, body, status, response_path = PATHS[case]
    clear_sim_requests(plain)
    got, headers, raw_body = raw(plain.url, method, path, body, FORGED)
    assert got == status, raw_body
    leaked = {k: v for k, v in headers.items() if "forged" in v}
    assert not leaked, leaked
    assert headers["x-vsr-response-path"] == response_path  # the router's own value
    assert "x-vsr-matched-signals" not in headers
    if case == "routed":
        # The forged cluster header did not steer the request, and no forged value reached the backend.
        seen = sim_requests(plain, "b-fast")
        assert len(seen) == 1
        upstream = {k.lower(): v for k, v in seen[0]["headers"].items()}
        assert "x-vsr-cluster" not in upstream and not [v for v in upstream.values() if "forged" in v], upstream
        assert not sim_requests(plain, "b-slow")


def test_debug_header_is_ignored_unless_allowed(plain, guarded):
    for stack, allowed in ((plain, False), (guarded, True)):
        resp = client(stack).chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "please deliberate"}], extra_headers={"x-vsr-debug": "1"}
        )
        assert resp.headers["x-vsr-response-path"] == "fusion"
        if allowed:
            assert "keyword:deliberate" in resp.headers["x-vsr-matched-signals"].split(",")
        else:
            assert "x-vsr-matched-signals" not in resp.headers


# ------------------------------------------------------------------------------------------ the secret


def test_whole_flow_works_through_an_envoy_that_sends_the_secret(guarded):
    c = client(guarded)
    routed = c.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": "hello"}])
    assert routed.headers["x-vsr-response-path"] == "routed" and routed.headers["x-sim-backend"] == "b-fast"
    fusion = c.chat.completions.with_raw_response.create(
        model="vllm-sr/fusion", messages=[{"role": "user", "content": "deliberate"}]
    )
    assert fusion.headers["x-vsr-response-path"] == "fusion"
    assert fusion.parse().choices[0].message.content
    stream = c.chat.completions.create(model="auto", messages=[{"role": "user", "content": "please deliberate"}], stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert [m.id for m in c.models.list()][:1] == ["vllm-sr/auto"]


def _headers(pairs: dict[str, str], eos: bool) -> ep.ProcessingRequest:
    values = [core.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()]
    msg = ep.ProcessingRequest(request_headers=ep.HttpHeaders(headers=core.HeaderMap(headers=values), end_of_stream=eos))
    msg.protocol_config.CopyFrom(ep.ProtocolConfiguration(request_body_mode=pm.ProcessingMode.FULL_DUPLEX_STREAMED))
    return msg


def fusion_stream() -> Iterator[ep.ProcessingRequest]:
    """What Envoy would send for a Fusion request: the call that once ran a Fusion without Envoy."""
    yield _headers({":method": "POST", ":path": CHAT, ":authority": "x", "content-type": "application/json"}, eos=False)
    yield ep.ProcessingRequest(request_body=ep.HttpBody(body=chat("vllm-sr/fusion", "deliberate"), end_of_stream=True))


def models_stream() -> Iterator[ep.ProcessingRequest]:
    yield _headers({":method": "GET", ":path": "/v1/models", ":authority": "x"}, eos=True)


def process(
    stack, requests: Iterator[ep.ProcessingRequest], metadata: tuple[tuple[str, str], ...] = ()
) -> list[ep.ProcessingResponse]:
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as channel:
        stub = ep_grpc.ExternalProcessorStub(channel)
        return list(stub.Process(requests, metadata=metadata, timeout=30))


def scrape(stack, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.admin_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


@pytest.mark.parametrize(
    "metadata",
    [(), (("authorization", "Bearer wrong-secret-0123456789"),), (("authorization", SECRET),)],
    ids=["none", "wrong", "no-bearer-scheme"],
)
def test_process_without_the_secret_is_refused_before_anything_runs(guarded, metadata):
    clear_sim_requests(guarded)
    before = scrape(guarded, "fusion_router_unauthenticated_streams_total")
    with pytest.raises(grpc.RpcError) as exc:
        process(guarded, fusion_stream(), metadata)
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # No panel, judge or synthesis call reached any backend.
    assert all(not sim_requests(guarded, b) for b in ("b-fast", "b-slow", "b-judge"))
    assert scrape(guarded, "fusion_router_unauthenticated_streams_total") == before + 1


def test_process_with_the_secret_is_served(guarded):
    out = process(guarded, models_stream(), (("authorization", f"Bearer {SECRET}"),))
    assert out[0].immediate_response.status.code == 200
    assert json.loads(out[0].immediate_response.body)["object"] == "list"


def test_an_envoy_without_the_secret_gets_router_unavailable(guarded, tmp_path):
    cfg = build_envoy_config(
        load_config(guarded.config_path),
        EnvoyPorts(
            listen_host="127.0.0.1",
            listen_port=free_port(),
            admin_port=free_port(),
            router_port=guarded.grpc_port,
            internal_port=None,
        ),
    )
    path = tmp_path / "envoy-no-secret.yaml"
    path.write_text(yaml.safe_dump(cfg))
    admin = cfg["admin"]["address"]["socket_address"]["port_value"]
    proc = subprocess.Popen(
        [envoy_binary(), "-c", str(path), "--base-id", str(admin), "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_ok(f"http://127.0.0.1:{admin}/ready", proc)
        url = f"http://127.0.0.1:{cfg['static_resources']['listeners'][0]['address']['socket_address']['port_value']}"
        status, headers, body = raw(url, "POST", CHAT, chat("auto", "please deliberate"))
        assert status == 503 and headers["content-type"] == "application/json"
        assert json.loads(body)["error"]["code"] == "router_unavailable"
    finally:
        stop_process(proc)


def test_generated_bootstrap_carries_the_secret_only_when_asked(tmp_path):
    cfg_path = tmp_path / "r.yaml"
    cfg_path.write_text(yaml.safe_dump(exposure_config(ext_proc_secret_env=SECRET_ENV)))
    base = [sys.executable, "-m", "router.cli", "envoy-config", str(cfg_path)]
    env = {"PATH": "/usr/bin:/bin", SECRET_ENV: SECRET}
    plain = subprocess.run(base, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert plain.returncode == 0 and SECRET not in plain.stdout
    assert "--ext-proc-secret-env" in plain.stderr  # says why the router would refuse this Envoy
    asked = subprocess.run(
        [*base, "--ext-proc-secret-env", SECRET_ENV], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert asked.returncode == 0, asked.stderr
    doc = yaml.safe_load(asked.stdout)
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    ext = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")
    assert ext["typed_config"]["grpc_service"]["initial_metadata"] == [{"key": "authorization", "value": f"Bearer {SECRET}"}]
    missing = subprocess.run(
        [*base, "--ext-proc-secret-env", "NOT_SET_ANYWHERE"], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert missing.returncode == 2 and "NOT_SET_ANYWHERE is not set" in missing.stderr


def test_serve_refuses_to_start_without_its_secret(tmp_path):
    cfg_path = tmp_path / "r.yaml"
    cfg_path.write_text(yaml.safe_dump(exposure_config(ext_proc_secret_file=str(tmp_path / "missing"))))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "router.cli",
            "serve",
            "--config",
            str(cfg_path),
            "--grpc-port",
            str(free_port()),
            "--admin-port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert f"cannot read the ext_proc secret file {tmp_path / 'missing'}" in result.stderr


# ------------------------------------------------------------------------------------------ binding


def _listening(port: int) -> set[str]:
    """Local addresses of the LISTEN sockets on ``port`` (IPv4 and IPv6), read from /proc/net."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:
                found.add(addr)
    return found


def _wait_ok(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} not ready")


def test_serve_binds_loopback_by_default(tmp_path):
    cfg_path = tmp_path / "r.yaml"
    cfg_path.write_text(yaml.safe_dump(exposure_config()))
    grpc_port, admin_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "router.cli",
            "serve",
            "--config",
            str(cfg_path),
            "--grpc-port",
            str(grpc_port),
            "--admin-port",
            str(admin_port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_ok(f"http://127.0.0.1:{admin_port}/readyz", proc)
        # 127.0.0.1 as /proc/net/tcp writes it, or as an IPv4-mapped IPv6 address (gRPC's socket).
        loopback = {"0100007F", "0000000000000000FFFF00000100007F"}
        assert _listening(grpc_port) and _listening(grpc_port) <= loopback, _listening(grpc_port)
        assert _listening(admin_port) and _listening(admin_port) <= loopback, _listening(admin_port)
    finally:
        stop_process(proc)


def test_cli_default_host_is_loopback():
    from router.cli import build_parser

    args = build_parser().parse_args(["serve", "--config", "x.yaml"])
    assert args.host == "127.0.0.1" and args.admin_host is None
    assert copy.copy(args).workers == 1
