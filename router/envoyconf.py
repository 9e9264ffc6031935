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
from router.extproc import auth
from router.extproc import headers as H

EXT_PROC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HTTP_OPTS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
HEADER_MUTATION_TYPE = "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
CEL_FILTER_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"
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


# ------------------------------------------------------------------------------------------ local replies
# Envoy answers some requests itself: bad HTTP (400/431/501), bodies over the buffer (413), a backend
# that is down or slow (503/504), a router that is down (ext_proc gRPC error, 500). Unmapped, those are
# plain text or empty. The mappers below give each the OpenAI error shape with a code. The router's own
# answers (ext_proc immediate responses) pass the same local-reply path, are OpenAI-shaped already and
# always carry x-vsr-response-path: the first mapper matches them and changes nothing (the first match
# wins), so no later mapper can touch them. Envoy's own replies can carry the header too, copied from the
# request by the route's response_headers_to_add once the router has routed: those are told apart by
# the request holding it (the router's immediate responses never set it on the request, and client
# copies are stripped before ext_proc). Verified against Envoy 1.40 in tests/integration/test_edge_errors.py.


@dataclass(frozen=True)
class LocalReply:
    code: str
    type: str
    message: str  # Envoy substitution format: %RESPONSE_CODE_DETAILS% names what Envoy refused
    status: int | None = None  # match Envoy's status ...
    flags: tuple[str, ...] = ()  # ... or these response flags ...
    details_prefix: str | None = None  # ... or response code details starting with this
    status_at_least: int | None = None  # catch-alls
    rewrite_status: int | None = None
    retry_after: bool = False


_CLIENT = "invalid_request_error"
_SERVER = "server_error"
LOCAL_REPLIES: tuple[LocalReply, ...] = (
    # ext_proc could not reach (or was refused by) the router: fail closed, but say so and let clients retry.
    LocalReply("router_unavailable", _SERVER, "The router is unavailable; retry the request.",
               details_prefix="ext_proc_error_gRPC", rewrite_status=503, retry_after=True),
    LocalReply("upstream_timeout", _SERVER, "The model backend did not answer in time.", flags=("UT",)),
    LocalReply("upstream_overloaded", _SERVER, "Too many requests are in flight to the model backend; retry the request.",
               flags=("UO",), retry_after=True),
    LocalReply("upstream_unavailable", _SERVER, "The model backend is unavailable; retry the request.",
               flags=("UF", "UH", "URX", "UC", "UR", "LR", "NC"), retry_after=True),
    LocalReply("bad_request", _CLIENT, "The request is not valid HTTP (%RESPONSE_CODE_DETAILS%).", status=400),
    LocalReply("not_found", _CLIENT, "Nothing is served at this path; use POST /v1/chat/completions or GET /v1/models.",
               status=404),
    LocalReply("request_timeout", _CLIENT, "The request was not received in time (%RESPONSE_CODE_DETAILS%).", status=408),
    LocalReply("request_too_large", _CLIENT, "The request body is larger than this gateway accepts.", status=413),
    LocalReply("rate_limited", "rate_limit_error", "Too many requests; retry later.", status=429, retry_after=True),
    LocalReply("request_header_fields_too_large", _CLIENT,
               "The request headers are larger than this gateway accepts (%RESPONSE_CODE_DETAILS%).", status=431),
    LocalReply("not_implemented", _CLIENT, "This gateway does not implement what the request asks for (%RESPONSE_CODE_DETAILS%).",
               status=501),
    LocalReply("upstream_error", _SERVER, "The model backend sent an invalid response.", status=502),
    LocalReply("service_unavailable", _SERVER, "The gateway is unavailable; retry the request.", status=503, retry_after=True),
    LocalReply("upstream_timeout", _SERVER, "The model backend did not answer in time.", status=504),
    LocalReply("gateway_error", _SERVER, "The gateway could not complete the request (%RESPONSE_CODE_DETAILS%).",
               status_at_least=500),
    LocalReply("request_refused", _CLIENT, "The gateway refused the request (%RESPONSE_CODE_DETAILS%).", status_at_least=400),
)


def _cel(expression: str) -> dict[str, Any]:
    return {"extension_filter": {"name": "envoy.access_loggers.extension_filters.cel",
                                 "typed_config": {"@type": CEL_FILTER_TYPE, "expression": expression}}}


def _status_filter(op: str, status: int) -> dict[str, Any]:
    # runtime_key is required by the API; nothing sets it, so the default applies.
    return {"status_code_filter": {"comparison": {"op": op, "value": {
        "default_value": status, "runtime_key": f"fusion_router.local_reply.status_{op.lower()}_{status}"}}}}


def _mapper(r: LocalReply) -> dict[str, Any]:
    if r.details_prefix:
        flt = _cel(f"response.code_details.startsWith('{r.details_prefix}')")
    elif r.flags:
        flt = {"response_flag_filter": {"flags": list(r.flags)}}
    elif r.status is not None:
        flt = _status_filter("EQ", r.status)
    else:
        assert r.status_at_least is not None
        flt = _status_filter("GE", r.status_at_least)
    mapper: dict[str, Any] = {"filter": flt}
    if r.rewrite_status:
        mapper["status_code"] = r.rewrite_status
    mapper["body_format_override"] = {"json_format": {"error": {
        "message": r.message, "type": r.type, "code": r.code, "param": None}}}
    if r.retry_after:
        mapper["headers_to_add"] = [{"header": {"key": "retry-after", "value": "1"},
                                     "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    return mapper


def local_reply_config() -> dict[str, Any]:
    """The HttpConnectionManager ``local_reply_config`` of every listener clients call."""
    h = H.RESPONSE_PATH
    router_reply = {"filter": _cel(f"'{h}' in response.headers && !('{h}' in request.headers)")}
    return {"mappers": [router_reply, *(_mapper(r) for r in LOCAL_REPLIES)]}


def client_stripped_headers(config: Config) -> list[str]:
    """Request headers a client must never set: the routing header (with failure_mode_allow a client could
    pick a cluster) and every header the route copies onto the response (else a client's own copy would
    be echoed back wherever the router did not overwrite it: errors, /v1/models, Fusion)."""
    return [config.global_.router.cluster_header, *H.RESPONSE_COPIED]


def strip_filter(names: list[str]) -> dict[str, Any]:
    """Runs before ext_proc, so the router, the route and the local-reply mappers only see our own copies."""
    return {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {"@type": HEADER_MUTATION_TYPE,
                         "mutations": {"request_mutations": [{"remove": n} for n in names]}},
    }


def grpc_retry_policy() -> dict[str, Any]:
    """Open the ext_proc stream on another router worker when one refuses the connection (it died and is
    being restarted). Only failures before the worker saw the request: a request that kills a worker
    (say, an out-of-memory prompt) must not be replayed onto the next one."""
    return {
        "retry_on": "connect-failure,refused-stream",
        "num_retries": 3,
        "retry_back_off": {"base_interval": "0.05s", "max_interval": "0.5s"},
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
        "host_selection_retry_max_attempts": 5,
    }


def ext_proc_filter(config: Config, *, failure_mode_allow: bool = False, body_mode: str = "FULL_DUPLEX_STREAMED",
                    secret: str | None = None) -> dict[str, Any]:
    grpc_service: dict[str, Any] = {"envoy_grpc": {"cluster_name": ROUTER_CLUSTER}, "timeout": "900s",
                                    "retry_policy": grpc_retry_policy()}
    if secret is not None:
        # The router refuses Process streams without it (global.router.ext_proc_secret_*).
        grpc_service["initial_metadata"] = [{"key": auth.METADATA_KEY, "value": auth.metadata_value(secret)}]
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": EXT_PROC_TYPE,
            "grpc_service": grpc_service,
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
    secret: str | None = None,
) -> dict[str, Any]:
    """``ext_proc=False`` (benchmarks' Envoy-alone baseline) drops the ext_proc filter and sends every
    request to ``default_cluster`` instead of the cluster named by the router's routing header.
    ``secret``: the shared secret Envoy sends the router (None: none; then the router must not want one)."""
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
        "local_reply_config": local_reply_config(),
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
            *([strip_filter(client_stripped_headers(config)),
               ext_proc_filter(config, failure_mode_allow=failure_mode_allow, body_mode=body_mode, secret=secret)]
              if ext_proc else []),
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
            **({"health_checks": [_router_health_check()]} if ports.router_workers > 1 else {}),
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


def _router_health_check() -> dict[str, Any]:
    """With several workers, one that died (and is being restarted by `serve`) or drains is skipped until
    it answers the gRPC health service again. Needs no secret: health is a separate service."""
    return {
        "timeout": "1s",
        "interval": "1s",
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
        "grpc_health_check": {"service_name": "envoy.service.ext_proc.v3.ExternalProcessor"},
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


def main(argv: list[str] | None = None) -> int:
    """``python -m router.envoyconf local-reply``: the local_reply_config as YAML, for the files that are
    written by hand around it (the chart's files/local-reply.yaml, envoy/mesh/*); tests keep them equal."""
    import sys

    import yaml

    args = sys.argv[1:] if argv is None else argv
    if args != ["local-reply"]:
        print("usage: python -m router.envoyconf local-reply", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump(local_reply_config(), sort_keys=False, width=1000))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
