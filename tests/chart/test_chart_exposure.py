"""The chart's Envoy gives Envoy's own errors the OpenAI shape and strips client x-vsr-* copies, exactly
as the generator does (router/envoyconf.py); the router's gRPC port stays on loopback in the pod; the
optional ext_proc secret lives in a Secret, never in a ConfigMap, and the Envoy container's own start
command puts it where Envoy sends it (run here with the real Envoy and a real router)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from router.config import load_config
from router.envoyconf import (
    _router_health_check,
    client_stripped_headers,
    grpc_retry_policy,
    local_reply_config,
)

from .helpers import CHART, EXAMPLES, envoy_validate, helm_template, render

SECRET = "chart-test-secret-0123456789abcdef"


def _hcm(envoy_yaml: str) -> dict:
    envoy = yaml.safe_load(envoy_yaml)
    listener = next(lst for lst in envoy["static_resources"]["listeners"] if lst["name"] == "fusion_router_http")
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def _ext_proc(hcm: dict) -> dict:
    return next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")["typed_config"]


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_local_replies_and_header_strip_match_the_generator(rendered, example):
    r = rendered(example)
    hcm = _hcm(r.envoy_yaml)
    assert hcm["local_reply_config"] == local_reply_config()
    first = hcm["http_filters"][0]
    assert first["name"] == "envoy.filters.http.header_mutation"  # before ext_proc
    removed = [m["remove"] for m in first["typed_config"]["mutations"]["request_mutations"]]
    config = load_config_text(r.router_config_yaml)
    assert removed[: len(client_stripped_headers(config))] == client_stripped_headers(config)
    assert _ext_proc(hcm)["grpc_service"]["retry_policy"] == grpc_retry_policy()


def load_config_text(text: str):
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(text)
        f.flush()
        return load_config(f.name)


def test_chart_file_is_the_generators_output():
    text = (CHART / "files" / "local-reply.yaml").read_text()
    assert yaml.safe_load(text) == local_reply_config(), "regenerate: python -m router.envoyconf local-reply"


def test_workers_get_a_health_checked_router_cluster():
    envoy = yaml.safe_load(render(sets=["router.workers=2"]).envoy_yaml)
    cluster = next(c for c in envoy["static_resources"]["clusters"] if c["name"] == "fusion_router")
    assert cluster["health_checks"] == [_router_health_check()]
    single = yaml.safe_load(render().envoy_yaml)
    assert "health_checks" not in next(c for c in single["static_resources"]["clusters"] if c["name"] == "fusion_router")


@pytest.mark.parametrize(
    ("sets", "host"),
    [
        ([], "127.0.0.1"),
        (["envoy.enabled=false"], "0.0.0.0"),
        (["service.exposeRouterGrpc=true"], "0.0.0.0"),
    ],
)
def test_router_grpc_binds_loopback_unless_an_outside_envoy_calls_it(sets, host):
    args = [str(a) for a in render(sets=sets).container("router")["args"]]
    assert args[args.index("--host") + 1] == host
    assert args[args.index("--admin-host") + 1] == "0.0.0.0"


def test_a_grpc_probe_on_a_loopback_port_is_refused():
    proc = helm_template("--set", "router.startupProbe.httpGet=null", "--set", "router.startupProbe.grpc.service=")
    assert proc.returncode != 0
    assert "router.startupProbe: a grpc probe cannot reach the router's gRPC port" in proc.stderr


def test_dockerfiles_do_not_bind_everything_by_default():
    root = CHART.parents[1]
    for name in ("Dockerfile", "Dockerfile.cuda"):
        cmd = next(line for line in (root / name).read_text().splitlines() if line.startswith("CMD "))
        assert "0.0.0.0" not in cmd, (name, cmd)


# ------------------------------------------------------------------------------------------ the secret


def test_secret_off_by_default(rendered):
    for example in EXAMPLES:
        r = rendered(example)
        assert "initial_metadata" not in _ext_proc(_hcm(r.envoy_yaml))["grpc_service"]
        assert "--ext-proc-secret-env" not in r.container("router")["args"]


def test_generated_secret_is_referenced_and_never_in_a_configmap():
    r = render(sets=["router.extProcSecret.enabled=true"])
    (secret,) = r.of_kind("Secret")
    assert secret["metadata"]["name"] == "fr-fusion-router-ext-proc"
    value = base64.b64decode(secret["data"]["ext-proc-secret"]).decode()
    assert len(value) == 48 and value.isalnum()
    for cm in r.of_kind("ConfigMap"):
        assert value not in json.dumps(cm), cm["metadata"]["name"]
    ext = _ext_proc(_hcm(r.envoy_yaml))
    assert ext["grpc_service"]["initial_metadata"] == [
        {"key": "authorization", "value": "Bearer __FUSION_ROUTER_EXT_PROC_SECRET__"}
    ]
    router = r.container("router")
    args = [str(a) for a in router["args"]]
    assert args[args.index("--ext-proc-secret-env") + 1] == "FUSION_ROUTER_EXT_PROC_SECRET"
    ref = {"name": "fr-fusion-router-ext-proc", "key": "ext-proc-secret"}
    for c in (router, r.container("envoy")):
        env = {e["name"]: e for e in c["env"]}
        assert env["FUSION_ROUTER_EXT_PROC_SECRET"]["valueFrom"]["secretKeyRef"] == ref
    mount = next(m for m in r.container("envoy")["volumeMounts"] if m["mountPath"] == "/run/envoy")
    volume = next(v for v in r.pod["volumes"] if v["name"] == mount["name"])
    assert volume["emptyDir"]["medium"] == "Memory"  # the filled-in config never touches the node's disk


def test_existing_secret_is_used_as_is():
    r = render(
        sets=[
            "router.extProcSecret.enabled=true",
            "router.extProcSecret.existingSecret=my-secret",
            "router.extProcSecret.key=token",
        ]
    )
    assert not r.of_kind("Secret")
    env = {e["name"]: e for e in r.container("envoy")["env"]}
    assert env["FUSION_ROUTER_EXT_PROC_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "my-secret", "key": "token"}


def _free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"exited with {proc.returncode}: {out[-2000:]}")
        try:
            if _get(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} not ready")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _envoy_command(r, need_envoy: str, tmp: Path, envoy_secret: str) -> tuple[list[str], dict[str, str]]:
    """The Envoy container's command and env, pointed at this machine's paths."""
    etc, run = tmp / "etc", tmp / "run"
    etc.mkdir(exist_ok=True)
    run.mkdir(exist_ok=True)
    (etc / "envoy.yaml").write_text(r.envoy_yaml)
    c = r.container("envoy")
    cmd = [
        str(a).replace("/etc/envoy/", f"{etc}/").replace("/run/envoy/", f"{run}/").replace("/usr/local/bin/envoy", need_envoy)
        for a in c["command"]
    ]
    args = [str(a) for a in c["args"]]
    args[args.index("--log-level") + 1] = "error"
    args = [a for a in args if a != "--disable-hot-restart"] + ["--base-id", str(os.getpid() % 50000 + 1000)]
    return cmd + args, {"PATH": os.environ["PATH"], "FUSION_ROUTER_EXT_PROC_SECRET": envoy_secret}


@pytest.mark.envoy
@pytest.mark.parametrize(
    ("envoy_secret", "want"), [(SECRET, 200), ("another-secret-0123456789abcdef", 503)], ids=["same-secret", "wrong-secret"]
)
def test_envoy_start_command_fills_in_the_secret_and_the_router_checks_it(need_envoy, tmp_path, envoy_secret, want):
    listener, admin, health, grpc, looper, router_admin = _free_ports(6)
    r = render(
        sets=[
            "router.extProcSecret.enabled=true",
            f"envoy.listenerPort={listener}",
            f"envoy.adminPort={admin}",
            f"envoy.healthPort={health}",
            f"envoy.looperPort={looper}",
            f"router.grpcPort={grpc}",
            f"router.adminPort={router_admin}",
        ]
    )
    config = tmp_path / "router.yaml"
    config.write_text(r.router_config_yaml)
    router_args = [str(a) for a in r.container("router")["args"]]
    router_args[router_args.index("--config") + 1] = str(config)
    router_args[router_args.index("--admin-host") + 1] = "127.0.0.1"
    router = subprocess.Popen(
        [sys.executable, "-m", "router.cli", *router_args],
        env={**os.environ, "FUSION_ROUTER_EXT_PROC_SECRET": SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    cmd, env = _envoy_command(r, need_envoy, tmp_path, envoy_secret)
    envoy = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _wait(f"http://127.0.0.1:{router_admin}/readyz", router)
        _wait(f"http://127.0.0.1:{health}/ready", envoy)
        assert envoy_secret in (tmp_path / "run" / "envoy.yaml").read_text()
        assert "__FUSION_ROUTER_EXT_PROC_SECRET__" in (tmp_path / "etc" / "envoy.yaml").read_text()
        status, body = _get(f"http://127.0.0.1:{listener}/v1/models")
        assert status == want, body
        if want == 200:
            assert json.loads(body)["object"] == "list"
        else:
            assert json.loads(body)["error"]["code"] == "router_unavailable"
    finally:
        _stop(envoy)
        _stop(router)


def test_envoy_start_command_refuses_a_malformed_secret(need_envoy, tmp_path):
    r = render(sets=["router.extProcSecret.enabled=true"])
    cmd, env = _envoy_command(r, need_envoy, tmp_path, 'has spaces and is "quoted"')
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1 and "the ext_proc secret must be" in proc.stderr
    assert not (tmp_path / "run" / "envoy.yaml").exists()


def test_rendered_config_with_the_secret_validates(need_envoy, tmp_path):
    text = render(sets=["router.extProcSecret.enabled=true", "router.workers=3"]).envoy_yaml
    proc = envoy_validate(text.replace("__FUSION_ROUTER_EXT_PROC_SECRET__", SECRET), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
