"""Assertions on the objects charts/fusion-router renders (default values, the examples, the kind values)."""

from __future__ import annotations

import pytest
import yaml

from .helpers import EXAMPLES, render

ALL = list(EXAMPLES)
CONFIG_PATH = "/etc/fusion-router/config.yaml"  # what the CLI reads: serve --config <this>


def _args(container: dict) -> list[str]:
    return [str(a) for a in container.get("args", [])]


@pytest.mark.parametrize("example", ALL)
def test_pod_has_router_and_envoy(rendered, example):
    r = rendered(example)
    names = [c["name"] for c in r.pod["containers"]]
    assert names == ["router", "envoy"]
    envoy = r.container("envoy")
    assert envoy["image"].startswith("envoyproxy/envoy:")
    assert envoy["command"] == ["/usr/local/bin/envoy"]
    assert _args(envoy)[:2] == ["-c", "/etc/envoy/envoy.yaml"]


@pytest.mark.parametrize("example", ALL)
def test_router_runs_the_cli_with_the_mounted_config(rendered, example):
    r = rendered(example)
    router = r.container("router")
    args = _args(router)
    assert args[0] == "serve"
    assert args[args.index("--config") + 1] == CONFIG_PATH
    # gRPC: only this pod's Envoy calls it; admin: probes and scrapes come from outside the pod
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert args[args.index("--admin-host") + 1] == "0.0.0.0"
    assert args[args.index("--grpc-port") + 1] == "50051"
    assert args[args.index("--admin-port") + 1] == "9190"
    # the config directory is a ConfigMap volume mounted without subPath (hot reload sees updates)
    mount = next(m for m in router["volumeMounts"] if m["mountPath"] == "/etc/fusion-router")
    assert "subPath" not in mount and mount["readOnly"] is True
    volume = next(v for v in r.pod["volumes"] if v["name"] == mount["name"])
    cm_name = volume["configMap"]["name"]
    assert volume["configMap"]["items"] == [{"key": "config.yaml", "path": "config.yaml"}]
    assert r.one("ConfigMap", "-config")["metadata"]["name"] == cm_name
    env = {e["name"]: e for e in router["env"]}
    assert env["FUSION_ROUTER_MODELS_DIR"]["value"] == "/app/models"
    # Envoy's config is mounted where its args point
    envoy_mount = next(m for m in r.container("envoy")["volumeMounts"] if m["mountPath"] == "/etc/envoy")
    envoy_volume = next(v for v in r.pod["volumes"] if v["name"] == envoy_mount["name"])
    assert envoy_volume["configMap"]["name"] == r.one("ConfigMap", "-envoy")["metadata"]["name"]


@pytest.mark.parametrize("example", ALL)
def test_probes(rendered, example):
    r = rendered(example)
    router = r.container("router")
    assert router["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}  # gRPC binds loopback
    assert router["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert router["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    envoy = r.container("envoy")
    assert envoy["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "envoy-health"}
    assert envoy["livenessProbe"]["httpGet"]["port"] == "envoy-health"
    ports = {p["name"]: p["containerPort"] for c in r.pod["containers"] for p in c["ports"]}
    assert ports == {"grpc": 50051, "metrics": 9190, "http": 8801, "envoy-health": 9902}


def test_grpc_probe_follows_the_grpc_port():
    # A grpc probe works where the gRPC port leaves the pod (mesh mode); it is refused where it binds loopback.
    r = render(
        sets=[
            "router.grpcPort=6000",
            "envoy.enabled=false",
            "router.startupProbe.httpGet=null",
            "router.startupProbe.grpc.service=",
        ]
    )
    assert r.container("router")["startupProbe"]["grpc"]["port"] == 6000
    assert "port_value: 6000" in render(sets=["router.grpcPort=6000"]).envoy_yaml


@pytest.mark.parametrize("example", ALL)
def test_drain_wiring(rendered, example):
    r = rendered(example)
    drain = yaml.safe_load(r.router_config_yaml)["global"]["router"]["drain_timeout_seconds"]
    assert r.pod["terminationGracePeriodSeconds"] == 2 * drain + 15
    envoy = r.container("envoy")
    args = _args(envoy)
    assert args[args.index("--drain-time-s") + 1] == str(drain)
    script = envoy["lifecycle"]["preStop"]["exec"]["command"][-1]
    assert "/drain_listeners?graceful&inboundonly" in script and "/healthcheck/fail" in script
    assert script.rstrip().endswith(f"sleep {drain}")
    assert r.container("router")["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(drain + 5)]


@pytest.mark.parametrize("example", ALL)
def test_services(rendered, example):
    r = rendered(example)
    main = r.one("Service", "fusion-router") if example != "default" else r.one("Service", "fr-fusion-router")
    assert [(p["name"], p["port"], p["targetPort"]) for p in main["spec"]["ports"]] == [("http", 8801, "http")]
    metrics = r.one("Service", "-metrics")
    assert {p["name"]: p["port"] for p in metrics["spec"]["ports"]} == {"metrics": 9190, "envoy-metrics": 9902}
    selector = r.deployment["spec"]["selector"]["matchLabels"]
    for svc in (main, metrics):
        assert svc["spec"]["selector"] == selector


def test_secrets_are_referenced_never_inlined(rendered):
    r = rendered("cpu-only")
    env = {e["name"]: e for e in r.container("router")["env"]}
    key = env["OPENAI_API_KEY"]
    assert "value" not in key
    assert key["valueFrom"]["secretKeyRef"] == {"name": "llm-provider-keys", "key": "openai"}
    assert not r.of_kind("Secret")
    config = yaml.safe_load(r.router_config_yaml)
    openai = next(b for b in config["backends"] if b["name"] == "openai")
    assert openai["api_key_env"] == "OPENAI_API_KEY"


def test_https_backend_gets_tls_with_sni(rendered):
    envoy = yaml.safe_load(rendered("cpu-only").envoy_yaml)
    cluster = next(c for c in envoy["static_resources"]["clusters"] if c["name"] == "openai")
    addr = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert addr == {"address": "api.openai.com", "port_value": 443}
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["sni"] == "api.openai.com"


def test_backends_become_clusters_and_router_backends(rendered):
    r = rendered("default")
    envoy = yaml.safe_load(r.envoy_yaml)
    clusters = {c["name"]: c for c in envoy["static_resources"]["clusters"]}
    config = yaml.safe_load(r.router_config_yaml)
    names = [b["name"] for b in config["backends"]]
    assert names == ["qwen3-8b-vllm", "qwen3-32b-vllm"]
    assert set(clusters) == {"fusion_router", "envoy_admin", *names}
    addr = clusters["qwen3-8b-vllm"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert addr["socket_address"] == {"address": "qwen3-8b.llm.svc.cluster.local", "port_value": 8000}
    assert "transport_socket" not in clusters["qwen3-8b-vllm"]
    # chart-owned router settings
    assert config["global"]["router"]["cluster_header"] == "x-vsr-cluster"
    # looper sub-calls use the pod-local Envoy's loopback listener (no second ext_proc hop)
    assert config["global"]["integrations"]["looper"]["endpoint"] == "http://127.0.0.1:8802/v1/chat/completions"


def test_envoy_config_contract(rendered):
    envoy = yaml.safe_load(rendered("default").envoy_yaml)
    assert envoy["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    listener = next(lst for lst in envoy["static_resources"]["listeners"] if lst["name"] == "fusion_router_http")
    assert listener["address"]["socket_address"]["port_value"] == 8801
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["stream_idle_timeout"] == "600s" and hcm["request_timeout"] == "0s"
    filters = [f["name"] for f in hcm["http_filters"]]
    assert filters[-2:] == ["envoy.filters.http.ext_proc", "envoy.filters.http.router"]
    ext = hcm["http_filters"][-2]["typed_config"]
    assert ext["grpc_service"]["envoy_grpc"]["cluster_name"] == "fusion_router"
    assert ext["failure_mode_allow"] is False
    assert ext["processing_mode"] == {
        "request_header_mode": "SEND",
        "response_header_mode": "SKIP",
        "request_body_mode": "FULL_DUPLEX_STREAMED",
        "response_body_mode": "NONE",
        "request_trailer_mode": "SEND",
        "response_trailer_mode": "SKIP",
    }
    assert ext["allow_mode_override"] is True
    assert ext["message_timeout"] == "600s" and ext["max_message_timeout"] == "900s"
    vhost = hcm["route_config"]["virtual_hosts"][0]
    assert vhost["domains"] == ["*"] and vhost["request_body_buffer_limit"] >= 16 * 1024 * 1024
    route = vhost["routes"][0]
    assert route["match"] == {"prefix": "/"}
    assert route["route"] == {"cluster_header": "x-vsr-cluster", "timeout": "0s"}
    copied = {h["header"]["key"]: h for h in route["response_headers_to_add"]}
    for name in (
        "x-vsr-selected-decision",
        "x-vsr-selected-model",
        "x-vsr-response-path",
        "x-vsr-matched-signals",
        "x-vsr-entry-path",
    ):
        assert copied[name]["header"]["value"] == f"%REQ({name})%"
        assert copied[name]["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD"
    router = next(c for c in envoy["static_resources"]["clusters"] if c["name"] == "fusion_router")
    addr = router["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert addr == {"address": "127.0.0.1", "port_value": 50051}
    opts = router["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in opts["explicit_http_config"]
    assert router["circuit_breakers"]["thresholds"][0]["max_requests"] == 100000


def test_failure_mode_allow_is_configurable():
    envoy = yaml.safe_load(render(sets=["envoy.failureModeAllow=true"]).envoy_yaml)
    hcm = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    ext = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")["typed_config"]
    assert ext["failure_mode_allow"] is True
    strip = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.header_mutation")
    assert strip["typed_config"]["mutations"]["request_mutations"] == [
        {"remove": h}
        for h in (
            "x-vsr-cluster",
            "x-vsr-selected-decision",
            "x-vsr-selected-model",
            "x-vsr-response-path",
            "x-vsr-entry-path",
            "x-vsr-matched-signals",
            "x-vsr-selection",
        )
    ]


def test_hpa_pdb_and_monitoring_when_enabled(rendered):
    r = rendered("gpu-classifiers")
    hpa = r.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["maxReplicas"] == 12
    assert hpa["spec"]["scaleTargetRef"]["name"] == r.deployment["metadata"]["name"]
    assert "replicas" not in r.deployment["spec"]  # the HPA owns it
    pdb = r.one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 2 and "maxUnavailable" not in pdb["spec"]
    sm = r.one("ServiceMonitor")
    assert {e["port"] for e in sm["spec"]["endpoints"]} == {"metrics", "envoy-metrics"}
    assert r.one("PrometheusRule")["spec"]["groups"][0]["rules"][0]["alert"] == "FusionRouterHighErrorRatio"
    dashboards = r.one("ConfigMap", "-dashboards")
    assert "fusion-router.json" in dashboards["data"]


def test_defaults_have_no_hpa_and_fixed_replicas(rendered):
    r = rendered("default")
    assert not r.of_kind("HorizontalPodAutoscaler")
    assert not r.of_kind("ServiceMonitor") and not r.of_kind("PrometheusRule")
    assert r.deployment["spec"]["replicas"] == 2
    assert r.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_gpu_values(rendered):
    r = rendered("gpu-classifiers")
    router = r.container("router")
    assert router["image"].endswith(":0.1.0-cuda")
    assert router["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert r.pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in r.pod["tolerations"]
    assert r.pod["runtimeClassName"] == "nvidia"
    assert "nvidia.com/gpu" not in r.container("envoy").get("resources", {}).get("limits", {})
    cpu = rendered("cpu-only")
    assert "nvidia.com/gpu" not in cpu.container("router")["resources"].get("limits", {})
    assert "tolerations" not in cpu.pod and not cpu.container("router")["image"].endswith("-cuda")


def test_existing_configmap():
    r = render(sets=["existingConfigMap=my-router-config", "existingConfigMapKey=router.yaml"])
    assert not [cm for cm in r.of_kind("ConfigMap") if cm["metadata"]["name"].endswith("-config")]
    volume = next(v for v in r.pod["volumes"] if v["name"] == "router-config")
    assert volume["configMap"] == {"name": "my-router-config", "items": [{"key": "router.yaml", "path": "config.yaml"}]}


def test_mesh_mode_without_envoy():
    r = render(sets=["envoy.enabled=false"])
    assert [c["name"] for c in r.pod["containers"]] == ["router"]
    assert not [cm for cm in r.of_kind("ConfigMap") if cm["metadata"]["name"].endswith("-envoy")]
    main = r.one("Service", "fr-fusion-router")
    assert [(p["name"], p["port"]) for p in main["spec"]["ports"]] == [("grpc", 50051)]
    headless = r.one("Service", "-headless")
    assert headless["spec"]["clusterIP"] == "None"
    config = yaml.safe_load(r.router_config_yaml)
    assert "endpoint" not in config["global"].get("integrations", {}).get("looper", {})


def test_security_defaults(rendered):
    r = rendered("default")
    assert r.pod["automountServiceAccountToken"] is False
    for c in r.pod["containers"]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert any(v["name"] == "tmp" and "emptyDir" in v for v in r.pod["volumes"])


def test_router_config_checksum_only_when_asked(rendered):
    annotations = rendered("default").deployment["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/envoy-config" in annotations and "checksum/router-config" not in annotations
    r = render(sets=["router.restartOnConfigChange=true"])
    assert "checksum/router-config" in r.deployment["spec"]["template"]["metadata"]["annotations"]


def test_models_volume():
    r = render(sets=["models.volume.persistentVolumeClaim.claimName=fr-models"])
    mount = next(m for m in r.container("router")["volumeMounts"] if m["name"] == "models")
    assert mount["mountPath"] == "/app/models" and mount["readOnly"] is True
    volume = next(v for v in r.pod["volumes"] if v["name"] == "models")
    assert volume["persistentVolumeClaim"] == {"claimName": "fr-models"}


def test_notes_tell_how_to_send_the_first_request(tmp_path):
    """helm template skips NOTES.txt, so render it through a copy of the chart that wraps it in a define."""
    import shutil

    from .helpers import CHART, HELM

    chart = tmp_path / "fusion-router"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_zz_notes.tpl").write_text('{{- define "zz.notes" -}}\n' + notes + "{{- end }}\n")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: rendered-notes\n"
        'data:\n  notes: {{ include "zz.notes" . | toJson }}\n'
    )
    import subprocess

    proc = subprocess.run(
        [HELM, "template", "fr", str(chart), "-n", "fusion", "--show-only", "templates/zz-notes.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    text = yaml.safe_load(proc.stdout)["data"]["notes"]
    assert "kubectl -n fusion port-forward svc/fr-fusion-router 8801:8801" in text
    assert '"model": "vllm-sr/auto"' in text and "http://127.0.0.1:8801/v1/chat/completions" in text


def test_router_workers_become_router_cluster_endpoints():
    r = render(sets=["router.workers=3", "router.grpcPort=6000"])
    envoy = yaml.safe_load(r.envoy_yaml)
    cluster = next(c for c in envoy["static_resources"]["clusters"] if c["name"] == "fusion_router")
    ports = [
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert ports == [6000, 6001, 6002] and cluster["lb_policy"] == "LEAST_REQUEST"
    args = r.container("router")["args"]
    assert args[args.index("--workers") + 1] == "3"
