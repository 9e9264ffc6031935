"""envoy/: every standalone-valid Envoy file passes `envoy --mode validate`; fragments and the Envoy pieces
inside the mesh objects (Istio EnvoyFilter) are assembled into a minimal bootstrap and validated too.

Which files count as standalone: a YAML file under envoy/ whose single document is a mapping with
`static_resources` (an Envoy bootstrap). Kubernetes objects (apiVersion/kind) and fragments are not; a
bootstrap that is only a template (placeholders) opts out with a first line `# envoy-validate: skip`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from router.envoyconf import grpc_retry_policy, local_reply_config
from router.extproc.headers import RESPONSE_COPIED

from .helpers import ROOT, envoy_validate

ENVOY_DIR = ROOT / "envoy"
MESH = ENVOY_DIR / "mesh"


def _yaml_files() -> list[Path]:
    return sorted(p for p in ENVOY_DIR.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def _standalone(path: Path) -> bool:
    text = path.read_text()
    if text.lstrip().startswith("# envoy-validate: skip"):
        return False
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError:
        return False
    return len(docs) == 1 and isinstance(docs[0], dict) and "static_resources" in docs[0]


STANDALONE = [p for p in _yaml_files() if _standalone(p)]


def test_there_is_a_standalone_plain_envoy_example():
    assert MESH / "plain-envoy" / "standalone.yaml" in STANDALONE


@pytest.mark.parametrize("path", STANDALONE, ids=[str(p.relative_to(ROOT)) for p in STANDALONE])
def test_standalone_files_validate(need_envoy, tmp_path, path):
    proc = envoy_validate(path.read_text(), tmp_path, path.name)
    assert proc.returncode == 0, proc.stdout + proc.stderr


STRIPPED = ["x-vsr-cluster", *RESPONSE_COPIED]


def _bootstrap(
    http_filters: list, clusters: list, route: dict | None = None, vhost_extra: dict | None = None, hcm_extra: dict | None = None
) -> str:
    route = route or {"match": {"prefix": "/"}, "route": {"cluster_header": "x-vsr-cluster", "timeout": "0s"}}
    vhost = {"name": "all", "domains": ["*"], "routes": [route], **(vhost_extra or {})}
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "test",
        "stream_idle_timeout": "600s",
        "request_timeout": "0s",
        "route_config": {"name": "r", "virtual_hosts": [vhost]},
        "http_filters": [*http_filters, router],
        **(hcm_extra or {}),
    }
    return yaml.safe_dump(
        {
            "static_resources": {
                "listeners": [
                    {
                        "name": "l",
                        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 8801}},
                        "filter_chains": [
                            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                        ],
                    }
                ],
                "clusters": clusters,
            }
        }
    )


def test_plain_envoy_snippet_assembles_into_a_valid_bootstrap(need_envoy, tmp_path):
    snippet = yaml.safe_load((MESH / "plain-envoy" / "snippet.yaml").read_text())
    assert set(snippet) == {"http_filters", "virtual_host", "route", "clusters", "local_reply_config"}
    names = [c["name"] for c in snippet["clusters"]]
    assert "fusion_router" in names
    config = _bootstrap(
        snippet["http_filters"],
        snippet["clusters"],
        snippet["route"],
        snippet["virtual_host"],
        {"local_reply_config": snippet["local_reply_config"]},
    )
    proc = envoy_validate(config, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snippet_and_standalone_agree_on_the_ext_proc_filter():
    snippet = yaml.safe_load((MESH / "plain-envoy" / "snippet.yaml").read_text())
    full = yaml.safe_load((MESH / "plain-envoy" / "standalone.yaml").read_text())
    hcm = full["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["http_filters"][:-1] == snippet["http_filters"]


def _strip_list(header_mutation: dict) -> list[str]:
    assert header_mutation["name"] == "envoy.filters.http.header_mutation"
    return [m["remove"] for m in header_mutation["typed_config"]["mutations"]["request_mutations"]]


def test_plain_envoy_files_match_the_generator():
    """Local replies, the header strip and the ext_proc retry policy are the generator's (router/envoyconf.py)."""
    snippet = yaml.safe_load((MESH / "plain-envoy" / "snippet.yaml").read_text())
    full = yaml.safe_load((MESH / "plain-envoy" / "standalone.yaml").read_text())
    hcm = full["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    for lrc, filters in (
        (snippet["local_reply_config"], snippet["http_filters"]),
        (hcm["local_reply_config"], hcm["http_filters"]),
    ):
        assert lrc == local_reply_config(), "regenerate: python -m router.envoyconf local-reply"
        assert _strip_list(filters[0]) == STRIPPED
        assert filters[1]["typed_config"]["grpc_service"]["retry_policy"] == grpc_retry_policy()


def _envoy_filter_patches() -> list[dict]:
    doc = yaml.safe_load((MESH / "istio" / "envoyfilter.yaml").read_text())
    assert doc["apiVersion"] == "networking.istio.io/v1alpha3" and doc["kind"] == "EnvoyFilter"
    return doc["spec"]["configPatches"]


def test_istio_envoyfilter_pieces_validate(need_envoy, tmp_path):
    patches = _envoy_filter_patches()
    filters = [p["patch"]["value"] for p in patches if p["applyTo"] == "HTTP_FILTER"]
    clusters = [p["patch"]["value"] for p in patches if p["applyTo"] == "CLUSTER"]
    assert [f["name"] for f in filters] == ["envoy.filters.http.header_mutation", "envoy.filters.http.ext_proc"]
    for p in patches:
        if p["applyTo"] == "HTTP_FILTER":
            assert p["patch"]["operation"] == "INSERT_BEFORE"
            assert p["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == "envoy.filters.http.router"
    ext = filters[1]["typed_config"]
    assert ext["processing_mode"]["request_header_mode"] == "SEND" and ext["allow_mode_override"] is True
    assert ext["message_timeout"] == "600s" and ext["failure_mode_allow"] is False
    assert ext["grpc_service"]["retry_policy"] == grpc_retry_policy()
    assert _strip_list(filters[0]) == STRIPPED
    (hcm_patch,) = [p for p in patches if p["applyTo"] == "NETWORK_FILTER"]
    assert hcm_patch["patch"]["operation"] == "MERGE"
    lrc = hcm_patch["patch"]["value"]["typed_config"]["local_reply_config"]
    assert lrc == local_reply_config(), "regenerate: python -m router.envoyconf local-reply"
    # a resolvable address for validate mode; STRICT_DNS of the in-cluster name is fine too
    proc = envoy_validate(
        _bootstrap(copy.deepcopy(filters), copy.deepcopy(clusters), hcm_extra={"local_reply_config": lrc}), tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_istio_virtualservice_routes_on_the_cluster_header():
    doc = yaml.safe_load((MESH / "istio" / "virtualservice.yaml").read_text())
    routes = doc["spec"]["http"]
    matched = [r for r in routes if r.get("match")]
    assert matched and all("x-vsr-cluster" in r["match"][0]["headers"] for r in matched)
    assert all("x-vsr-cluster" in r["headers"]["request"]["remove"] for r in matched)
    assert "match" not in routes[-1]  # the catch-all the request matches before the router decides


def test_envoy_gateway_policy():
    docs = list(yaml.safe_load_all((MESH / "envoy-gateway" / "extension-policy.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    policy = kinds["EnvoyExtensionPolicy"]
    assert policy["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    ext = policy["spec"]["extProc"][0]
    assert ext["backendRefs"][0]["port"] == 50051
    assert ext["processingMode"]["request"]["body"] == "FullDuplexStreamed"
    assert ext["processingMode"]["allowModeOverride"] is True
    assert ext["failOpen"] is False and ext["messageTimeout"] == "600s"
    route = kinds["HTTPRoute"]
    headers = [m.get("headers") for rule in route["spec"]["rules"] for m in rule["matches"]]
    assert any(h and h[0]["name"] == "x-vsr-cluster" for h in headers)
    # client copies stripped before routing and ext_proc
    assert kinds["ClientTrafficPolicy"]["spec"]["headers"]["earlyRequestHeaders"]["remove"] == STRIPPED


def test_envoy_gateway_local_reply_patch_validates(need_envoy, tmp_path):
    docs = list(yaml.safe_load_all((MESH / "envoy-gateway" / "extension-policy.yaml").read_text()))
    patch = next(d for d in docs if d["kind"] == "EnvoyPatchPolicy")
    (op,) = patch["spec"]["jsonPatches"]
    assert op["type"] == "type.googleapis.com/envoy.config.listener.v3.Listener"
    assert op["operation"]["path"].endswith("/typed_config/local_reply_config")
    lrc = op["operation"]["value"]
    assert lrc == local_reply_config(), "regenerate: python -m router.envoyconf local-reply"
    proc = envoy_validate(
        _bootstrap([], [], {"match": {"prefix": "/"}, "direct_response": {"status": 404}}, hcm_extra={"local_reply_config": lrc}),
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
