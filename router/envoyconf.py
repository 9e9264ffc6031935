"""Generate a standalone Envoy bootstrap for a router config (``fusion-router envoy-config``).

Built as data, not string templates, and checked by ``envoy --mode validate`` in the tests. The
settings that matter for an LLM gateway (see docs/envoy.md) are named here once.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from router.config.schema import Backend, Config
from router.extproc import headers as H

EXT_PROC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HTTP_OPTS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
ROUTER_CLUSTER = "fusion_router"
BIG = 100_000


@dataclass(frozen=True)
class EnvoyPorts:
    listen_host: str = "0.0.0.0"
    listen_port: int = 8801
    admin_host: str = "127.0.0.1"
    admin_port: int = 9901
    router_host: str = "127.0.0.1"
    router_port: int = 50051
    # Loopback-only listener for looper sub-calls: no ext_proc (the looper already decided), routes on the
    # cluster header the looper sets. None leaves it out (sub-calls then use the main listener + marker).
    internal_port: int | None = 8802
    router_workers: int = 1  # `serve --workers N`: ports router_port .. router_port + N - 1


def _socket(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _circuit_breakers() -> dict[str, Any]:
    # Every in-flight request holds one ext_proc stream; Envoy's default of 1024 would cap concurrency.
    return {"thresholds": [{"max_connections": BIG, "max_pending_requests": BIG, "max_requests": BIG, "max_retries": 16}]}


def ext_proc_filter(config: Config, *, failure_mode_allow: bool = False, body_mode: str = "FULL_DUPLEX_STREAMED") -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": EXT_PROC_TYPE,
            "grpc_service": {"envoy_grpc": {"cluster_name": ROUTER_CLUSTER}, "timeout": "900s"},
            "failure_mode_allow": failure_mode_allow,
            "processing_mode": {
                "request_header_mode": "SEND",
                "response_header_mode": "SKIP",
                # FULL_DUPLEX_STREAMED lets the router stream Fusion answers; BUFFERED also works.
                "request_body_mode": body_mode,
                "response_body_mode": "NONE",
                "request_trailer_mode": "SEND",
                "response_trailer_mode": "SKIP",
            },
            "allow_mode_override": True,
            # The router sets an exact content-length for the rewritten body in FULL_DUPLEX mode, so
            # backends get a plain body instead of a chunked one.
            "allow_content_length_header": True,
            # The default 200 ms would cut every Fusion run short (504).
            "message_timeout": "600s",
            "max_message_timeout": "900s",
        },
    }


def _backend_cluster(b: Backend) -> dict[str, Any]:
    assert b.endpoint is not None
    url = urlsplit(b.endpoint)
    tls = url.scheme == "https"
    host = url.hostname or "127.0.0.1"
    port = url.port or (443 if tls else 80)
    cluster: dict[str, Any] = {
        "name": b.name,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": "5s",
        "dns_lookup_family": "V4_PREFERRED",
        "circuit_breakers": _circuit_breakers(),
        "load_assignment": {
            "cluster_name": b.name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket(host, port)}}]}],
        },
    }
    if tls:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": TLS_TYPE, "sni": host},
        }
    return cluster


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def build_envoy_config(
    config: Config,
    ports: EnvoyPorts = EnvoyPorts(),
    *,
    failure_mode_allow: bool = False,
    body_mode: str = "FULL_DUPLEX_STREAMED",
    ext_proc: bool = True,
    default_cluster: str | None = None,
) -> dict[str, Any]:
    """``ext_proc=False`` (benchmarks' Envoy-alone baseline) drops the ext_proc filter and sends every
    request to ``default_cluster`` instead of the cluster named by the router's routing header."""
    router_cfg = config.global_.router
    if not ext_proc and not default_cluster:
        raise ValueError("build_envoy_config(ext_proc=False) needs default_cluster")
    target = {"cluster_header": router_cfg.cluster_header} if ext_proc else {"cluster": default_cluster}
    route = {
        "match": {"prefix": "/"},
        "route": {**target, "timeout": "0s", "idle_timeout": "600s"},
        # The routing header is Envoy's business; backends never see it.
        "request_headers_to_remove": [router_cfg.cluster_header],
        # Copy the router's decision from the request onto the client's response; empty values are skipped.
        "response_headers_to_add": [
            {"header": {"key": h, "value": f"%REQ({h})%"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for h in H.RESPONSE_COPIED
        ],
    }
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "fusion_ingress",
        "codec_type": "AUTO",
        "stream_idle_timeout": "600s",
        "request_timeout": "0s",
        "route_config": {
            "name": "fusion_routes",
            "virtual_hosts": [
                {
                    "name": "llm",
                    "domains": ["*"],
                    # BUFFERED bodies are capped by this buffer (1 MiB default → 413).
                    "request_body_buffer_limit": router_cfg.max_body_bytes + 1024,
                    "routes": [route],
                }
            ],
        },
        "http_filters": [
            *([ext_proc_filter(config, failure_mode_allow=failure_mode_allow, body_mode=body_mode)] if ext_proc else []),
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
        ],
    }
    listeners = [
        {
            "name": "fusion_listener",
            "address": _socket(ports.listen_host, ports.listen_port),
            "per_connection_buffer_limit_bytes": 1024 * 1024,
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
        }
    ]
    if ext_proc and ports.internal_port:
        listeners.append(_internal_listener(config, ports.internal_port))
    clusters = [
        {
            "name": ROUTER_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "2s",
            "circuit_breakers": _circuit_breakers(),
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": HTTP_OPTS_TYPE,
                    "explicit_http_config": {"http2_protocol_options": {
                        "initial_stream_window_size": 16 * 1024 * 1024,
                        "initial_connection_window_size": 64 * 1024 * 1024,
                    }},
                }
            },
            # Several router workers: Envoy spreads ext_proc streams over them (least outstanding first).
            "lb_policy": "LEAST_REQUEST",
            "load_assignment": {
                "cluster_name": ROUTER_CLUSTER,
                "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": _socket(ports.router_host, ports.router_port + i)}}
                    for i in range(max(1, ports.router_workers))
                ]}],
            },
        }
    ]
    clusters += [_backend_cluster(b) for b in config.backends if b.endpoint is not None and b.cluster is None]
    return {
        "admin": {"address": _socket(ports.admin_host, ports.admin_port)},
        "static_resources": {
            "listeners": listeners,
            "clusters": clusters,
        },
    }


def _internal_listener(config: Config, port: int) -> dict[str, Any]:
    """Looper sub-calls re-enter Envoy here: Envoy's clusters, retries and health checks apply, without a
    second ext_proc round trip (about 3 ms per call). Bound to loopback only: in a pod that is the
    router's own network namespace."""
    header = config.global_.router.cluster_header
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "fusion_looper",
        "codec_type": "AUTO",
        "stream_idle_timeout": "600s",
        "request_timeout": "0s",
        "route_config": {
            "name": "fusion_looper_routes",
            "virtual_hosts": [{
                "name": "looper",
                "domains": ["*"],
                "request_body_buffer_limit": config.global_.router.max_body_bytes + 1024,
                "routes": [{
                    "match": {"prefix": "/"},
                    "route": {"cluster_header": header, "timeout": "0s", "idle_timeout": "600s"},
                    "request_headers_to_remove": [header, H.LOOPER_TOKEN],
                }],
            }],
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
    }
    return {
        "name": "fusion_looper_listener",
        "address": _socket("127.0.0.1", port),
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
    }
