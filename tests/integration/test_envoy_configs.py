"""Every shipped Envoy config passes `envoy --mode validate`; the shipped bootstrap matches the generator."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from router.config import load_config
from router.envoyconf import EnvoyPorts, build_envoy_config, local_reply_config
from router.local import envoy_binary

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.envoy


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--base-id", str(random.randint(1000, 60000))],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_shipped_bootstrap_is_valid_and_current():
    shipped = ROOT / "envoy" / "envoy.yaml"
    result = validate(shipped)
    assert result.returncode == 0, result.stdout + result.stderr
    generated = build_envoy_config(load_config(ROOT / "config" / "default.yaml"))
    assert yaml.safe_load(shipped.read_text()) == generated, (
        "run: fusion-router envoy-config config/default.yaml -o envoy/envoy.yaml"
    )


@pytest.mark.parametrize(
    ("body_mode", "workers", "secret"),
    [
        ("FULL_DUPLEX_STREAMED", 1, None),
        ("BUFFERED", 1, None),
        ("FULL_DUPLEX_STREAMED", 4, "a-secret-of-sixteen-chars"),
    ],
)
def test_generated_configs_validate(tmp_path, body_mode, workers, secret):
    cfg = build_envoy_config(
        load_config(ROOT / "tests" / "integration" / "fusion.yaml"),
        EnvoyPorts(router_workers=workers),
        body_mode=body_mode,
        failure_mode_allow=True,
        secret=secret,
    )
    out = tmp_path / "envoy.yaml"
    out.write_text(yaml.safe_dump(cfg))
    result = validate(out)
    assert result.returncode == 0, result.stdout + result.stderr


def test_https_backend_gets_tls_and_sni(tmp_path):
    data = yaml.safe_load((ROOT / "config" / "default.yaml").read_text())
    data["backends"][0]["endpoint"] = "https://api.example.com"
    from router.config import parse_config

    cfg = parse_config(data)
    envoy = build_envoy_config(cfg)
    cluster = next(c for c in envoy["static_resources"]["clusters"] if c["name"] == "vllm-small")
    assert cluster["type"] == "STRICT_DNS"
    assert cluster["transport_socket"]["typed_config"]["sni"] == "api.example.com"
    out = tmp_path / "envoy.yaml"
    out.write_text(yaml.safe_dump(envoy))
    assert validate(out).returncode == 0


def test_serve_refuses_a_broken_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("backends: [{name: a, endpoint: 'http://127.0.0.1:1'}]\nmodels: [{name: m, backend: nope}]\n")
    result = subprocess.run(
        [sys.executable, "-m", "router.cli", "serve", "--config", str(bad), "--grpc-port", "0", "--admin-port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"{bad}: models[0].backend: unknown backend 'nope'" in result.stderr


def test_envoy_config_cli_writes_a_valid_bootstrap(tmp_path):
    out = tmp_path / "e.yaml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "router.cli",
            "envoy-config",
            str(ROOT / "config" / "default.yaml"),
            "-o",
            str(out),
            "--listen-port",
            "18801",
            "--router-port",
            "15051",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(out.read_text())
    assert doc["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] == 18801
    assert validate(out).returncode == 0


def test_every_client_listener_has_the_local_replies_and_the_header_strip():
    cfg = build_envoy_config(load_config(ROOT / "config" / "default.yaml"), EnvoyPorts(router_workers=2), secret="s" * 20)
    main, internal = cfg["static_resources"]["listeners"]
    hcm = main["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["local_reply_config"] == local_reply_config()
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == ["envoy.filters.http.header_mutation", "envoy.filters.http.ext_proc", "envoy.filters.http.router"]
    removed = [m["remove"] for m in hcm["http_filters"][0]["typed_config"]["mutations"]["request_mutations"]]
    assert removed == [
        "x-vsr-cluster",
        "x-vsr-selected-decision",
        "x-vsr-selected-model",
        "x-vsr-response-path",
        "x-vsr-entry-path",
        "x-vsr-matched-signals",
        "x-vsr-selection",
    ]
    # the looper token and the debug header must still reach the router
    assert "x-vsr-looper-token" not in removed and "x-vsr-debug" not in removed
    grpc = hcm["http_filters"][1]["typed_config"]["grpc_service"]
    assert grpc["initial_metadata"] == [{"key": "authorization", "value": "Bearer " + "s" * 20}]
    router = next(c for c in cfg["static_resources"]["clusters"] if c["name"] == "fusion_router")
    assert router["health_checks"][0]["grpc_health_check"]["service_name"] == "envoy.service.ext_proc.v3.ExternalProcessor"
    # the loopback looper listener has no ext_proc, so nothing to strip or map there
    assert internal["address"]["socket_address"]["address"] == "127.0.0.1"


# ------------------------------------------------------------------------------------------ typed generation
# router/envoyconf.py builds the bootstrap from envoy-data-plane's typed messages; router/envoy_render.py
# turns them into the YAML Envoy reads. `envoy --mode validate` above stays the proof that Envoy 1.40
# accepts the result; these check that the typed API holds every field and the rendering loses nothing.


def test_shipped_bootstrap_round_trips_through_the_typed_api():
    """Every field of envoy/envoy.yaml is a field of envoy-data-plane's Bootstrap (from_dict refuses unknown
    ones), and rendering the parsed message gives the file back unchanged."""
    from envoy_data_plane.envoy.config.bootstrap.v3 import Bootstrap

    from router.envoy_render import to_data

    shipped = yaml.safe_load((ROOT / "envoy" / "envoy.yaml").read_text())
    assert to_data(Bootstrap.from_dict(shipped)) == shipped


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_mode_allow": True, "body_mode": "BUFFERED"},
        {"ext_proc": False, "default_cluster": "vllm-small"},
        {"secret": "a-secret-of-sixteen-chars"},
    ],
)
def test_generated_configs_round_trip_through_the_typed_api(kwargs):
    from router.envoy_render import to_data
    from router.envoyconf import envoy_bootstrap

    typed = envoy_bootstrap(load_config(ROOT / "config" / "default.yaml"), EnvoyPorts(router_workers=2), **kwargs)
    data = to_data(typed)
    assert to_data(type(typed).from_dict(data)) == data
    assert data == build_envoy_config(load_config(ROOT / "config" / "default.yaml"), EnvoyPorts(router_workers=2), **kwargs)


def test_rendering_keeps_what_readers_should_see():
    """Proto JSON would drop zero values, pad durations and quote 64-bit integers; the YAML we write does not."""
    hcm = build_envoy_config(load_config(ROOT / "config" / "default.yaml"))["static_resources"]["listeners"][0]["filter_chains"][
        0
    ]["filters"][0]["typed_config"]
    ext_proc = hcm["http_filters"][1]["typed_config"]
    assert ext_proc["failure_mode_allow"] is False  # fail closed, written out
    assert ext_proc["processing_mode"]["response_body_mode"] == "NONE"
    assert hcm["codec_type"] == "AUTO" and hcm["request_timeout"] == "0s"
    retry = ext_proc["grpc_service"]["retry_policy"]
    assert retry["retry_back_off"] == {"base_interval": "0.05s", "max_interval": "0.5s"}
    assert retry["host_selection_retry_max_attempts"] == 5  # int64: a number, not "5"
    ops = [
        m["filter"]["status_code_filter"]["comparison"]["op"]
        for m in hcm["local_reply_config"]["mappers"]
        if "status_code_filter" in m["filter"]
    ]
    assert set(ops) == {"EQ", "GE"}


def test_an_unknown_body_mode_is_refused_by_name():
    with pytest.raises(ValueError, match="body_mode: 'BUFFERD' is not an ext_proc body mode"):
        build_envoy_config(load_config(ROOT / "config" / "default.yaml"), body_mode="BUFFERD")
