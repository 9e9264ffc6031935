"""The Envoy config the chart renders passes the real `envoy --mode validate`, and behaves at run time."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import yaml

from .helpers import EXAMPLES, envoy_validate, render


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_rendered_envoy_config_validates(rendered, need_envoy, tmp_path, example):
    proc = envoy_validate(rendered(example).envoy_yaml, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "sets",
    [
        ["envoy.failureModeAllow=true", "envoy.accessLog.enabled=false", "envoy.stripRequestHeaders=null"],
        ["backends[0].name=remote", "backends[0].endpoint=https://llm.example.com:8443/v1"],
    ],
)
def test_variants_validate(need_envoy, tmp_path, sets):
    proc = envoy_validate(render(sets=sets).envoy_yaml, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.envoy
def test_health_listener_and_prestop_drain(need_envoy, tmp_path):
    """Run the rendered config: /ready and /live on the health port, fail-closed JSON 503 without a router,
    then the Envoy container's preStop command turns /ready into 503 and closes the main listener."""
    listener, admin, health, grpc, looper = _free_ports(5)
    r = render(
        sets=[
            f"envoy.listenerPort={listener}",
            f"envoy.adminPort={admin}",
            f"envoy.healthPort={health}",
            f"envoy.looperPort={looper}",
            f"router.grpcPort={grpc}",
            "drain.timeoutSeconds=1",
        ]
    )
    config = tmp_path / "envoy.yaml"
    config.write_text(r.envoy_yaml)
    envoy_c = r.container("envoy")
    args = [a for a in envoy_c["args"] if a != "/etc/envoy/envoy.yaml"]
    args[args.index("-c") + 1 : args.index("-c") + 1] = [str(config)]
    args[args.index("--log-level") + 1] = "error"
    proc = subprocess.Popen(
        [need_envoy, *args, "--base-id", str(grpc)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if _get(f"http://127.0.0.1:{health}/ready")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"Envoy exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
            assert time.monotonic() < deadline, "Envoy did not become ready"
            time.sleep(0.1)
        assert _get(f"http://127.0.0.1:{health}/live")[0] == 200
        assert _get(f"http://127.0.0.1:{health}/stats/prometheus")[0] == 200
        assert _get(f"http://127.0.0.1:{health}/quitquitquit")[0] == 404  # admin is not exposed
        status, body = _get(f"http://127.0.0.1:{listener}/v1/models")
        # fail closed: the router is not running, and the client is told so in the OpenAI shape
        assert status == 503 and json.loads(body)["error"]["code"] == "router_unavailable"
        prestop = envoy_c["lifecycle"]["preStop"]["exec"]["command"]
        subprocess.run(prestop, check=True, timeout=30)
        status, body = _get(f"http://127.0.0.1:{health}/ready")
        assert (status, body.strip()) == (503, "DRAINING")
        assert _get(f"http://127.0.0.1:{health}/live")[0] == 200  # the health listener is not drained
        time.sleep(0.5)
        with pytest.raises(OSError):
            _get(f"http://127.0.0.1:{listener}/v1/models")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_router_gets_the_chart_owned_settings(rendered):
    config = yaml.safe_load(rendered("kind").router_config_yaml)
    assert config["global"]["router"]["drain_timeout_seconds"] == 5
