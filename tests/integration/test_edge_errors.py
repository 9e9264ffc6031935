"""Envoy's own answers are OpenAI-shaped errors with a code; the router's own answers pass untouched.

Everything goes through the real Envoy the generator configures (router/envoyconf.py ``local_reply_config``):
malformed HTTP (400), oversized headers (431), an unsupported transfer-encoding (501), a body over the
buffer (413), a backend that is down (503), a backend that is too slow (504), a router that is down
(503 ``router_unavailable``). The router's own errors (ext_proc immediate responses) keep the router's
body, code and headers.
"""

from __future__ import annotations

import copy
import http.client
import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from router.config import load_config
from router.envoyconf import EnvoyPorts, build_envoy_config
from router.local import Stack, envoy_binary, free_port, stop_process
from tests.integration.harness import clear_sim_requests, client, raw, sim_requests, stack_on_free_ports, with_sim_ports

pytestmark = pytest.mark.envoy

MAX_BODY = 64 * 1024
CHAT = "/v1/chat/completions"


def edge_config() -> dict[str, Any]:
    cfg = yaml.safe_load((Path(__file__).parent / "fusion.yaml").read_text())
    cfg["global"]["router"]["max_body_bytes"] = MAX_BODY
    cfg["backends"].append({"name": "b-dead", "endpoint": "http://127.0.0.1:1"})
    cfg["models"].append({"name": "m-dead", "backend": "b-dead"})
    return cfg


def start(tmp: Path, config: dict[str, Any], body_mode: str = "FULL_DUPLEX_STREAMED") -> Stack:
    """Like harness.start_stack, but backend b-dead points at a port nothing listens on."""
    config, specs = with_sim_ports(config, {"b-judge": {"mode": "judge_json"}})
    specs = [s for s in specs if s["name"] != "b-dead"]
    dead = next(b for b in config["backends"] if b["name"] == "b-dead")
    dead["endpoint"] = f"http://127.0.0.1:{free_port()}"
    path = tmp / "router.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return stack_on_free_ports(path, specs, tmp, body_mode=body_mode).start()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = start(tmp_path_factory.mktemp("edge"), edge_config())
    yield s
    s.stop()


def chat_body(model: str = "m-fast", text: str = "hello") -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": text}]}).encode()


def send_raw(stack: Stack, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Bytes the HTTP client libraries refuse to send; the reply parsed by hand."""
    with socket.create_connection(("127.0.0.1", stack.listen_port), timeout=10) as s:
        s.sendall(data)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return status, headers, body


def envoy_error(status: int, headers: dict[str, str], body: bytes, want_status: int, code: str, type_: str) -> dict[str, Any]:
    """Envoy's mapped local reply: the status, JSON, the code and type, and not the router's headers."""
    assert status == want_status, body
    assert headers["content-type"] == "application/json"
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "code", "param"}
    assert (err["code"], err["type"], err["param"]) == (code, type_, None), err
    assert err["message"]
    return err


def router_error(status: int, headers: dict[str, str], body: bytes, want_status: int, code: str) -> dict[str, Any]:
    """The router's own immediate response, as the router wrote it."""
    assert status == want_status, body
    assert headers["x-vsr-response-path"] == "error"
    assert headers["content-type"] == "application/json"
    err = json.loads(body)["error"]
    assert err["code"] == code, err
    return err


# ------------------------------------------------------------------------------------------ client side


def test_malformed_http_is_a_json_400(stack):
    status, headers, body = send_raw(stack, b"NOT HTTP AT ALL\r\n\r\n")
    err = envoy_error(status, headers, body, 400, "bad_request", "invalid_request_error")
    assert "http1.codec_error" in err["message"]  # what Envoy refused, for the client to fix


def test_oversized_headers_are_a_json_431(stack):
    request = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    status, headers, body = send_raw(stack, request)
    err = envoy_error(status, headers, body, 431, "request_header_fields_too_large", "invalid_request_error")
    assert "headers_too_large" in err["message"]


@pytest.mark.parametrize(
    "headers",
    [{"x-custom-note": "A" * 12_000}, {f"x-part-{i}": "B" * 6_000 for i in range(3)}],
    ids=["one_header_over_8k", "headers_over_16k_in_all"],
)
def test_headers_a_backend_would_refuse_get_the_routers_431_and_reach_no_backend(stack, headers):
    """Envoy takes 60 KiB of headers; a backend's HTTP server far less (aiohttp 8,190 bytes a line, vLLM's
    h11 16 KiB in all) and would answer in plain text. The router refuses them first, in JSON."""
    clear_sim_requests(stack)
    body = json.dumps({"model": "m-fast", "messages": [{"role": "user", "content": "hi"}]}).encode()
    status, hdrs, out = raw(stack.url, "POST", CHAT, body, headers)
    assert status == 431, out
    assert hdrs["content-type"] == "application/json"
    assert json.loads(out)["error"]["code"] == "request_header_too_large"
    assert sim_requests(stack, "b-fast") == []
    # just under the limits it is served
    ok = {k: v[: 8_000 if len(headers) == 1 else 4_000] for k, v in headers.items()}
    assert raw(stack.url, "POST", CHAT, body, ok)[0] == 200


def test_unsupported_transfer_encoding_is_a_json_501(stack):
    request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"
    status, headers, body = send_raw(stack, request)
    err = envoy_error(status, headers, body, 501, "not_implemented", "invalid_request_error")
    assert "invalid_transfer_encoding" in err["message"]


def test_body_over_envoys_buffer_is_a_json_413_and_the_routers_413_is_untouched(tmp_path):
    """BUFFERED mode: a chunked body (no content-length for the router to refuse early) past Envoy's buffer
    (measured: the larger of the listener's 1 MiB connection buffer and the vhost limit) is refused by
    Envoy itself; a declared oversized body is refused by the router."""
    s = start(tmp_path, edge_config(), body_mode="BUFFERED")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", s.listen_port, timeout=30)
        chunks = (b"x" * 16384 for _ in range(128))  # 2 MiB
        conn.request("POST", CHAT, body=chunks, headers={"content-type": "application/json"}, encode_chunked=True)
        resp = conn.getresponse()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        envoy_error(resp.status, headers, resp.read(), 413, "request_too_large", "invalid_request_error")
        assert "x-vsr-response-path" not in headers
        conn.close()

        big = chat_body(text="x" * (MAX_BODY + 10))
        err = router_error(*raw(s.url, "POST", CHAT, big), 413, "request_too_large")
        assert f"{MAX_BODY} bytes" in err["message"]  # the router's own wording, not the mapper's
    finally:
        s.stop()


# ------------------------------------------------------------------------------------------ router's own answers


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/v2/unknown", None, 404, "unsupported_path"),
        ("GET", CHAT, None, 405, "method_not_allowed"),
        ("POST", CHAT, b"{not json", 400, "invalid_json"),
        ("POST", CHAT, chat_body(model="gpt-17"), 404, "model_not_found"),
        ("GET", "/v1/models/nope", None, 404, "model_not_found"),
    ],
)
def test_routers_errors_pass_untouched(stack, method, path, body, status, code):
    status_, headers, raw_body = raw(stack.url, method, path, body)
    err = router_error(status_, headers, raw_body, status, code)
    # The router serialises message first; Envoy's JSON formatter would have sorted the keys (code first).
    assert raw_body.startswith(b'{"error":{"message":'), raw_body
    assert "retry-after" not in headers
    assert err["type"] == "invalid_request_error"


def test_routers_own_413_in_streamed_mode_is_untouched(stack):
    conn = http.client.HTTPConnection("127.0.0.1", stack.listen_port, timeout=30)
    try:
        chunks = (b"x" * 16384 for _ in range(2 * MAX_BODY // 16384))
        conn.request("POST", CHAT, body=chunks, headers={"content-type": "application/json"}, encode_chunked=True)
        resp = conn.getresponse()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        router_error(resp.status, headers, resp.read(), 413, "request_too_large")
    finally:
        conn.close()


def test_success_and_models_are_not_touched(stack):
    status, headers, body = raw(stack.url, "GET", "/v1/models")
    assert status == 200 and json.loads(body)["object"] == "list" and headers["x-vsr-response-path"] == "models"
    resp = client(stack).chat.completions.with_raw_response.create(model="m-fast", messages=[{"role": "user", "content": "hi"}])
    assert resp.http_response.status_code == 200 and resp.headers["x-vsr-response-path"] == "routed"


# ------------------------------------------------------------------------------------------ upstream side


def test_backend_down_is_a_json_503_naming_the_decision(stack):
    status, headers, body = raw(stack.url, "POST", CHAT, chat_body(model="m-dead"))
    envoy_error(status, headers, body, 503, "upstream_unavailable", "server_error")
    assert headers["retry-after"] == "1"
    # The router had decided; its headers still tell the client which model's backend is down.
    assert headers["x-vsr-selected-model"] == "m-dead" and headers["x-vsr-response-path"] == "routed"


def test_backend_down_through_the_openai_client(stack):
    with pytest.raises(openai.InternalServerError) as exc:
        client(stack).chat.completions.create(model="m-dead", messages=[{"role": "user", "content": "hi"}])
    assert exc.value.status_code == 503 and exc.value.code == "upstream_unavailable"


def test_slow_backend_is_a_json_504(stack, tmp_path):
    """The generated route has no upstream timeout (long generations); a second Envoy from the same
    generator, with a 300 ms route timeout, in front of the same router. The backend waits 5 s."""
    cfg = build_envoy_config(
        load_config(stack.config_path),
        EnvoyPorts(
            listen_host="127.0.0.1",
            listen_port=free_port(),
            admin_port=free_port(),
            router_port=stack.grpc_port,
            internal_port=None,
        ),
    )
    listener = cfg["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["timeout"] = "0.3s"
    path = tmp_path / "envoy-timeout.yaml"
    path.write_text(yaml.safe_dump(cfg))
    admin = cfg["admin"]["address"]["socket_address"]["port_value"]
    proc = subprocess.Popen(
        [envoy_binary(), "-c", str(path), "--base-id", str(admin), "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_http_ok(f"http://127.0.0.1:{admin}/ready", proc)
        url = f"http://127.0.0.1:{listener['address']['socket_address']['port_value']}"
        status, headers, body = raw(url, "POST", CHAT, chat_body(), {"x-sim-latency-ms": "5000"})
        envoy_error(status, headers, body, 504, "upstream_timeout", "server_error")
        assert headers["x-vsr-selected-model"] == "m-fast"
    finally:
        stop_process(proc)


def wait_http_ok(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
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


# ------------------------------------------------------------------------------------------ router down


def test_router_down_is_a_json_503_router_unavailable(tmp_path):
    s = start(tmp_path, edge_config())
    try:
        stop_process(s.procs.pop("router"))
        for method, path, body in (("POST", CHAT, chat_body()), ("GET", "/v1/models", None)):
            status, headers, raw_body = raw(s.url, method, path, body)
            envoy_error(status, headers, raw_body, 503, "router_unavailable", "server_error")
            assert headers["retry-after"] == "1"
        with pytest.raises(openai.InternalServerError) as exc:
            client(s).chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
        assert exc.value.status_code == 503 and exc.value.code == "router_unavailable"
    finally:
        s.stop()


def test_every_mapper_but_the_first_leaves_router_replies_alone():
    """The structural guarantee behind the tests above: the first mapper matches every router reply and
    rewrites nothing, and the first match wins."""
    from router.envoyconf import local_reply_config

    first, *rest = local_reply_config()["mappers"]
    assert set(first) == {"filter"}
    assert "'x-vsr-response-path' in response.headers && !('x-vsr-response-path' in request.headers)" in json.dumps(first)
    assert all("body_format_override" in m for m in rest)
    codes = [m["body_format_override"]["json_format"]["error"]["code"] for m in rest]
    assert {
        "router_unavailable",
        "upstream_unavailable",
        "upstream_timeout",
        "request_too_large",
        "request_header_fields_too_large",
        "bad_request",
        "not_implemented",
    } <= set(codes)
    assert copy.deepcopy(local_reply_config()) == local_reply_config()  # pure data
