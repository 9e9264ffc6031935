"""Generate a standalone Envoy bootstrap for a router config (``fusion-router envoy-config``).

Built from the typed messages of Envoy's config API (``envoy-data-plane``: a misspelt field or a wrong
type fails here, not in Envoy), rendered to plain data by ``router.envoy_render`` and checked by
``envoy --mode validate`` in the tests. The settings that matter for an LLM gateway (see docs/envoy.md)
are named here once. The ``*_config``/``*_filter``/``*_policy`` functions return that plain data for the
files written by hand around the generator (the chart, envoy/mesh), whose tests compare against them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from router.config.schema import Backend, Config
from router.envoy_render import to_data
from router.extproc import auth
from router.extproc import headers as H

with warnings.catch_warnings():
    # envoy-data-plane 2.2.0's generated validators use a form pydantic 2.12 deprecated: 122 warnings per import.
    warnings.simplefilter("ignore", DeprecationWarning)
    from envoy_data_plane.envoy.config.accesslog import v3 as accesslog
    from envoy_data_plane.envoy.config.bootstrap import v3 as boot
    from envoy_data_plane.envoy.config.cluster import v3 as cluster
    from envoy_data_plane.envoy.config.common.mutation_rules import v3 as mutation_rules
    from envoy_data_plane.envoy.config.core import v3 as core
    from envoy_data_plane.envoy.config.endpoint import v3 as endpoint
    from envoy_data_plane.envoy.config.listener import v3 as listener
    from envoy_data_plane.envoy.config.route import v3 as route
    from envoy_data_plane.envoy.extensions.access_loggers.filters.cel import v3 as cel
    from envoy_data_plane.envoy.extensions.filters.http.ext_proc import v3 as ep
    from envoy_data_plane.envoy.extensions.filters.http.header_mutation import v3 as header_mutation
    from envoy_data_plane.envoy.extensions.filters.http.router import v3 as http_router
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager import v3 as hcm
    from envoy_data_plane.envoy.extensions.retry.host.previous_hosts import v3 as previous_hosts
    from envoy_data_plane.envoy.extensions.transport_sockets.tls import v3 as tls
    from envoy_data_plane.envoy.extensions.upstreams.http import v3 as upstream_http
    from envoy_data_plane.google.protobuf import Any as AnyMessage
    from envoy_data_plane.google.protobuf import Struct

ROUTER_CLUSTER = "fusion_router"
BIG = 100_000
NO_TIMEOUT = dt.timedelta(0)
LONG_IDLE = dt.timedelta(seconds=600)
_OVERWRITE = core.HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
_SEND, _SKIP = ep.ProcessingModeHeaderSendMode.SEND, ep.ProcessingModeHeaderSendMode.SKIP


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


def _address(host: str, port: int) -> core.Address:
    return core.Address(socket_address=core.SocketAddress(address=host, port_value=port))


def _circuit_breakers() -> cluster.CircuitBreakers:
    # Every in-flight request holds one ext_proc stream; Envoy's default of 1024 would cap concurrency.
    return cluster.CircuitBreakers(
        thresholds=[
            cluster.CircuitBreakersThresholds(max_connections=BIG, max_pending_requests=BIG, max_requests=BIG, max_retries=16)
        ]
    )


def _header(key: str, value: str) -> core.HeaderValueOption:
    return core.HeaderValueOption(header=core.HeaderValue(key=key, value=value), append_action=_OVERWRITE)


def _load_assignment(name: str, addresses: list[core.Address]) -> endpoint.ClusterLoadAssignment:
    return endpoint.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[
            endpoint.LocalityLbEndpoints(
                lb_endpoints=[endpoint.LbEndpoint(endpoint=endpoint.Endpoint(address=a)) for a in addresses]
            )
        ],
    )


def _http_filter(name: str, typed_config: Any) -> hcm.HttpFilter:
    return hcm.HttpFilter(name=name, typed_config=AnyMessage.pack(typed_config))


def _router_filter() -> hcm.HttpFilter:
    return _http_filter("envoy.filters.http.router", http_router.Router())


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
    LocalReply(
        "router_unavailable",
        _SERVER,
        "The router is unavailable; retry the request.",
        details_prefix="ext_proc_error_gRPC",
        rewrite_status=503,
        retry_after=True,
    ),
    LocalReply("upstream_timeout", _SERVER, "The model backend did not answer in time.", flags=("UT",)),
    LocalReply(
        "upstream_overloaded",
        _SERVER,
        "Too many requests are in flight to the model backend; retry the request.",
        flags=("UO",),
        retry_after=True,
    ),
    LocalReply(
        "upstream_unavailable",
        _SERVER,
        "The model backend is unavailable; retry the request.",
        flags=("UF", "UH", "URX", "UC", "UR", "LR", "NC"),
        retry_after=True,
    ),
    LocalReply("bad_request", _CLIENT, "The request is not valid HTTP (%RESPONSE_CODE_DETAILS%).", status=400),
    LocalReply(
        "not_found", _CLIENT, "Nothing is served at this path; use POST /v1/chat/completions or GET /v1/models.", status=404
    ),
    LocalReply("request_timeout", _CLIENT, "The request was not received in time (%RESPONSE_CODE_DETAILS%).", status=408),
    LocalReply("request_too_large", _CLIENT, "The request body is larger than this gateway accepts.", status=413),
    LocalReply("rate_limited", "rate_limit_error", "Too many requests; retry later.", status=429, retry_after=True),
    LocalReply(
        "request_header_fields_too_large",
        _CLIENT,
        "The request headers are larger than this gateway accepts (%RESPONSE_CODE_DETAILS%).",
        status=431,
    ),
    LocalReply(
        "not_implemented",
        _CLIENT,
        "This gateway does not implement what the request asks for (%RESPONSE_CODE_DETAILS%).",
        status=501,
    ),
    LocalReply("upstream_error", _SERVER, "The model backend sent an invalid response.", status=502),
    LocalReply("service_unavailable", _SERVER, "The gateway is unavailable; retry the request.", status=503, retry_after=True),
    LocalReply("upstream_timeout", _SERVER, "The model backend did not answer in time.", status=504),
    LocalReply(
        "gateway_error", _SERVER, "The gateway could not complete the request (%RESPONSE_CODE_DETAILS%).", status_at_least=500
    ),
    LocalReply("request_refused", _CLIENT, "The gateway refused the request (%RESPONSE_CODE_DETAILS%).", status_at_least=400),
)


def _cel(expression: str) -> accesslog.AccessLogFilter:
    return accesslog.AccessLogFilter(
        extension_filter=accesslog.ExtensionFilter(
            name="envoy.access_loggers.extension_filters.cel",
            typed_config=AnyMessage.pack(cel.ExpressionFilter(expression=expression)),
        )
    )


def _status_filter(op: accesslog.ComparisonFilterOp, status: int) -> accesslog.AccessLogFilter:
    # runtime_key is required by the API; nothing sets it, so the default applies.
    return accesslog.AccessLogFilter(
        status_code_filter=accesslog.StatusCodeFilter(
            comparison=accesslog.ComparisonFilter(
                op=op,
                value=core.RuntimeUInt32(
                    default_value=status, runtime_key=f"fusion_router.local_reply.status_{op.name.lower()}_{status}"
                ),
            )
        )
    )


def _mapper(r: LocalReply) -> hcm.ResponseMapper:
    if r.details_prefix:
        flt = _cel(f"response.code_details.startsWith('{r.details_prefix}')")
    elif r.flags:
        flt = accesslog.AccessLogFilter(response_flag_filter=accesslog.ResponseFlagFilter(flags=list(r.flags)))
    elif r.status is not None:
        flt = _status_filter(accesslog.ComparisonFilterOp.EQ, r.status)
    else:
        assert r.status_at_least is not None
        flt = _status_filter(accesslog.ComparisonFilterOp.GE, r.status_at_least)
    body = Struct.from_dict({"error": {"message": r.message, "type": r.type, "code": r.code, "param": None}})
    return hcm.ResponseMapper(
        filter=flt,
        status_code=r.rewrite_status,
        body_format_override=core.SubstitutionFormatString(json_format=body),
        headers_to_add=[_header("retry-after", "1")] if r.retry_after else [],
    )


def local_replies() -> hcm.LocalReplyConfig:
    """The HttpConnectionManager ``local_reply_config`` of every listener clients call."""
    h = H.RESPONSE_PATH
    router_reply = hcm.ResponseMapper(filter=_cel(f"'{h}' in response.headers && !('{h}' in request.headers)"))
    return hcm.LocalReplyConfig(mappers=[router_reply, *(_mapper(r) for r in LOCAL_REPLIES)])


def local_reply_config() -> dict[str, Any]:
    return to_data(local_replies())


def client_stripped_headers(config: Config) -> list[str]:
    """Request headers a client must never set: the routing header (with failure_mode_allow a client could
    pick a cluster), every header the route copies onto the response (else a client's own copy would
    be echoed back wherever the router did not overwrite it: errors, /v1/models, Fusion) and, with
    tenants configured, the tenant header (only Envoy's own filters after this strip may set it, e.g.
    jwt_authn's claim_to_headers), unless ``global.tenants.trust_client_header`` says a gateway in
    front already set it."""
    tenants = config.global_.tenants
    tenant = [tenants.header] if tenants.enabled and not tenants.trust_client_header else []
    return [config.global_.router.cluster_header, *H.RESPONSE_COPIED, *tenant]


def strip_header_filter(names: list[str]) -> hcm.HttpFilter:
    """Runs before ext_proc, so the router, the route and the local-reply mappers only see our own copies."""
    return _http_filter(
        "envoy.filters.http.header_mutation",
        header_mutation.HeaderMutation(
            mutations=header_mutation.Mutations(request_mutations=[mutation_rules.HeaderMutation(remove=n) for n in names])
        ),
    )


def strip_filter(names: list[str]) -> dict[str, Any]:
    return to_data(strip_header_filter(names))


def ext_proc_retries() -> core.RetryPolicy:
    """Open the ext_proc stream on another router worker when one refuses the connection (it died and is
    being restarted). Only failures before the worker saw the request: a request that kills a worker
    (say, an out-of-memory prompt) must not be replayed onto the next one."""
    return core.RetryPolicy(
        retry_on="connect-failure,refused-stream",
        num_retries=3,
        retry_back_off=core.BackoffStrategy(
            base_interval=dt.timedelta(milliseconds=50), max_interval=dt.timedelta(milliseconds=500)
        ),
        retry_host_predicate=[
            core.RetryPolicyRetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=AnyMessage.pack(previous_hosts.PreviousHostsPredicate()),
            )
        ],
        host_selection_retry_max_attempts=5,
    )


def grpc_retry_policy() -> dict[str, Any]:
    return to_data(ext_proc_retries())


def ext_proc_http_filter(
    *, failure_mode_allow: bool = False, body_mode: str = "FULL_DUPLEX_STREAMED", secret: str | None = None
) -> hcm.HttpFilter:
    try:
        request_body_mode = ep.ProcessingModeBodySendMode[body_mode]
    except KeyError:
        raise ValueError(
            f"body_mode: {body_mode!r} is not an ext_proc body mode ({', '.join(m.name for m in ep.ProcessingModeBodySendMode)})"
        ) from None
    # The router refuses Process streams without the secret (global.router.ext_proc_secret_*).
    metadata = [] if secret is None else [core.HeaderValue(key=auth.METADATA_KEY, value=auth.metadata_value(secret))]
    return _http_filter(
        "envoy.filters.http.ext_proc",
        ep.ExternalProcessor(
            grpc_service=core.GrpcService(
                envoy_grpc=core.GrpcServiceEnvoyGrpc(cluster_name=ROUTER_CLUSTER),
                timeout=dt.timedelta(seconds=900),
                retry_policy=ext_proc_retries(),
                initial_metadata=metadata,
            ),
            failure_mode_allow=failure_mode_allow,
            processing_mode=ep.ProcessingMode(
                request_header_mode=_SEND,
                response_header_mode=_SKIP,
                # FULL_DUPLEX_STREAMED lets the router stream Fusion answers; BUFFERED also works.
                request_body_mode=request_body_mode,
                response_body_mode=ep.ProcessingModeBodySendMode.NONE,
                request_trailer_mode=_SEND,
                response_trailer_mode=_SKIP,
            ),
            allow_mode_override=True,
            # The router sets an exact content-length for the rewritten body in FULL_DUPLEX mode, so
            # backends get a plain body instead of a chunked one.
            allow_content_length_header=True,
            # The default 200 ms would cut every Fusion run short (504).
            message_timeout=dt.timedelta(seconds=600),
            max_message_timeout=dt.timedelta(seconds=900),
        ),
    )


def ext_proc_filter(
    config: Config, *, failure_mode_allow: bool = False, body_mode: str = "FULL_DUPLEX_STREAMED", secret: str | None = None
) -> dict[str, Any]:
    del config  # the filter's settings do not depend on the router config (kept for callers)
    return to_data(ext_proc_http_filter(failure_mode_allow=failure_mode_allow, body_mode=body_mode, secret=secret))


def _backend_cluster(b: Backend) -> cluster.Cluster:
    assert b.endpoint is not None
    url = urlsplit(b.endpoint)
    secure = url.scheme == "https"
    host = url.hostname or "127.0.0.1"
    port = url.port or (443 if secure else 80)
    return cluster.Cluster(
        name=b.name,
        type=cluster.ClusterDiscoveryType.STATIC if _is_ip(host) else cluster.ClusterDiscoveryType.STRICT_DNS,
        connect_timeout=dt.timedelta(seconds=5),
        dns_lookup_family=cluster.ClusterDnsLookupFamily.V4_PREFERRED,
        circuit_breakers=_circuit_breakers(),
        load_assignment=_load_assignment(b.name, [_address(host, port)]),
        transport_socket=core.TransportSocket(
            name="envoy.transport_sockets.tls", typed_config=AnyMessage.pack(tls.UpstreamTlsContext(sni=host))
        )
        if secure
        else None,
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _router_cluster(ports: EnvoyPorts) -> cluster.Cluster:
    workers = max(1, ports.router_workers)
    http2 = core.Http2ProtocolOptions(
        initial_stream_window_size=16 * 1024 * 1024, initial_connection_window_size=64 * 1024 * 1024
    )
    return cluster.Cluster(
        name=ROUTER_CLUSTER,
        type=cluster.ClusterDiscoveryType.STATIC,
        connect_timeout=dt.timedelta(seconds=2),
        circuit_breakers=_circuit_breakers(),
        typed_extension_protocol_options={
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": AnyMessage.pack(
                upstream_http.HttpProtocolOptions(
                    explicit_http_config=upstream_http.HttpProtocolOptionsExplicitHttpConfig(http2_protocol_options=http2)
                )
            )
        },
        # Several router workers: Envoy spreads ext_proc streams over them (least outstanding first).
        lb_policy=cluster.ClusterLbPolicy.LEAST_REQUEST,
        health_checks=[router_health_check()] if ports.router_workers > 1 else [],
        load_assignment=_load_assignment(
            ROUTER_CLUSTER, [_address(ports.router_host, ports.router_port + i) for i in range(workers)]
        ),
    )


def envoy_bootstrap(
    config: Config,
    ports: EnvoyPorts = EnvoyPorts(),
    *,
    failure_mode_allow: bool = False,
    body_mode: str = "FULL_DUPLEX_STREAMED",
    ext_proc: bool = True,
    default_cluster: str | None = None,
    secret: str | None = None,
) -> boot.Bootstrap:
    """The typed bootstrap; ``build_envoy_config`` is its plain data (what Envoy reads as YAML)."""
    router_cfg = config.global_.router
    if not ext_proc and not default_cluster:
        raise ValueError("build_envoy_config(ext_proc=False) needs default_cluster")
    action = route.RouteAction(timeout=NO_TIMEOUT, idle_timeout=LONG_IDLE)
    if ext_proc:
        action.cluster_header = router_cfg.cluster_header
    else:
        action.cluster = default_cluster
    main_route = route.Route(
        match=route.RouteMatch(prefix="/"),
        route=action,
        # The routing header is Envoy's business; backends never see it.
        request_headers_to_remove=[router_cfg.cluster_header],
        # Copy the router's decision from the request onto the client's response; empty values are skipped.
        response_headers_to_add=[_header(h, f"%REQ({h})%") for h in H.RESPONSE_COPIED],
    )
    filters = (
        [
            strip_header_filter(client_stripped_headers(config)),
            ext_proc_http_filter(failure_mode_allow=failure_mode_allow, body_mode=body_mode, secret=secret),
        ]
        if ext_proc
        else []
    )
    manager = hcm.HttpConnectionManager(
        stat_prefix="fusion_ingress",
        codec_type=hcm.HttpConnectionManagerCodecType.AUTO,
        stream_idle_timeout=LONG_IDLE,
        request_timeout=NO_TIMEOUT,
        local_reply_config=local_replies(),
        route_config=route.RouteConfiguration(
            name="fusion_routes",
            virtual_hosts=[
                route.VirtualHost(
                    name="llm",
                    domains=["*"],
                    # BUFFERED bodies are capped by this buffer (1 MiB default → 413).
                    request_body_buffer_limit=router_cfg.max_body_bytes + 1024,
                    routes=[main_route],
                )
            ],
        ),
        http_filters=[*filters, _router_filter()],
    )
    listeners = [
        listener.Listener(
            name="fusion_listener",
            address=_address(ports.listen_host, ports.listen_port),
            per_connection_buffer_limit_bytes=1024 * 1024,
            filter_chains=[_hcm_chain(manager)],
        )
    ]
    if ext_proc and ports.internal_port:
        listeners.append(_internal_listener(config, ports.internal_port))
    clusters = [
        _router_cluster(ports),
        *(_backend_cluster(b) for b in config.backends if b.endpoint is not None and b.cluster is None),
    ]
    return boot.Bootstrap(
        admin=boot.Admin(address=_address(ports.admin_host, ports.admin_port)),
        static_resources=boot.BootstrapStaticResources(listeners=listeners, clusters=clusters),
    )


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
    return to_data(
        envoy_bootstrap(
            config,
            ports,
            failure_mode_allow=failure_mode_allow,
            body_mode=body_mode,
            ext_proc=ext_proc,
            default_cluster=default_cluster,
            secret=secret,
        )
    )


def _hcm_chain(manager: hcm.HttpConnectionManager) -> listener.FilterChain:
    return listener.FilterChain(
        filters=[listener.Filter(name="envoy.filters.network.http_connection_manager", typed_config=AnyMessage.pack(manager))]
    )


def router_health_check() -> core.HealthCheck:
    """With several workers, one that died (and is being restarted by `serve`) or drains is skipped until
    it answers the gRPC health service again. Needs no secret: health is a separate service."""
    return core.HealthCheck(
        timeout=dt.timedelta(seconds=1),
        interval=dt.timedelta(seconds=1),
        unhealthy_threshold=1,
        healthy_threshold=1,
        grpc_health_check=core.HealthCheckGrpcHealthCheck(service_name="envoy.service.ext_proc.v3.ExternalProcessor"),
    )


def _router_health_check() -> dict[str, Any]:
    return to_data(router_health_check())


def _internal_listener(config: Config, port: int) -> listener.Listener:
    """Looper sub-calls re-enter Envoy here: Envoy's clusters, retries and health checks apply, without a
    second ext_proc round trip (about 3 ms per call). Bound to loopback only: in a pod that is the
    router's own network namespace."""
    header = config.global_.router.cluster_header
    manager = hcm.HttpConnectionManager(
        stat_prefix="fusion_looper",
        codec_type=hcm.HttpConnectionManagerCodecType.AUTO,
        stream_idle_timeout=LONG_IDLE,
        request_timeout=NO_TIMEOUT,
        route_config=route.RouteConfiguration(
            name="fusion_looper_routes",
            virtual_hosts=[
                route.VirtualHost(
                    name="looper",
                    domains=["*"],
                    request_body_buffer_limit=config.global_.router.max_body_bytes + 1024,
                    routes=[
                        route.Route(
                            match=route.RouteMatch(prefix="/"),
                            route=route.RouteAction(cluster_header=header, timeout=NO_TIMEOUT, idle_timeout=LONG_IDLE),
                            request_headers_to_remove=[header, H.LOOPER_TOKEN],
                        )
                    ],
                )
            ],
        ),
        http_filters=[_router_filter()],
    )
    return listener.Listener(
        name="fusion_looper_listener", address=_address("127.0.0.1", port), filter_chains=[_hcm_chain(manager)]
    )


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
