{{/*
The Envoy bootstrap for the pod (Envoy 1.40 API). Checked by `envoy --mode validate` in tests/chart.

  listener :listenerPort  (INBOUND)  HTTP/1.1 + h2 -> header_mutation (strip client x-vsr-* copies)
                                      -> ext_proc (fusion_router, FULL_DUPLEX_STREAMED) -> router
                                      local_reply_config: Envoy's own errors as OpenAI JSON (files/local-reply.yaml)
                                      route "/" -> cluster_header: <clusterHeader>
  listener 127.0.0.1:looperPort      looper sub-calls: route on the cluster header, no ext_proc
  listener :healthPort               /ready -> admin /ready, /stats/prometheus -> admin, /live -> 200
  admin    127.0.0.1:adminPort       (preStop drain: /healthcheck/fail + /drain_listeners?graceful&inboundonly)
  clusters fusion_router (the router, 127.0.0.1:grpcPort, h2), envoy_admin, one per backend.

With router.extProcSecret.enabled the ext_proc grpc_service carries `authorization: Bearer <placeholder>`;
the Envoy container replaces the placeholder from its Secret-backed env var at start (deployment.yaml),
so the ConfigMap never holds the secret.
*/}}
{{- define "fusion-router.extProcSecretPlaceholder" -}}__FUSION_ROUTER_EXT_PROC_SECRET__{{- end }}
{{/* Client request headers removed before ext_proc: the routing header and every header the route copies
onto the response (else a client's own copy would be echoed wherever the router did not overwrite it),
plus envoy.stripRequestHeaders and, with routerConfig.global.tenants, the tenant header. The same list as
router/envoyconf.py client_stripped_headers(). */}}
{{- define "fusion-router.strippedHeaders" -}}
{{- $names := list .Values.envoy.clusterHeader "x-vsr-selected-decision" "x-vsr-selected-model" "x-vsr-response-path" "x-vsr-entry-path" "x-vsr-matched-signals" "x-vsr-selection" }}
{{- range .Values.envoy.stripRequestHeaders | default list }}{{ $names = append $names . }}{{ end }}
{{- /* With tenants configured, only Envoy's own filters may set the tenant header (docs/policies.md). */}}
{{- $tenants := dig "global" "tenants" dict (.Values.routerConfig | default dict) }}
{{- if and $tenants (not (get $tenants "trust_client_header")) }}{{ $names = append $names (get $tenants "header" | default "x-vsr-tenant") }}{{ end }}
{{- toJson (uniq $names) }}
{{- end }}
{{- define "fusion-router.envoyConfig" -}}
{{- $e := .Values.envoy }}
{{- $name := include "fusion-router.fullname" . -}}
node:
  id: {{ $name }}
  cluster: {{ $name }}
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: {{ int $e.adminPort }}}
overload_manager:
  resource_monitors:
    - name: envoy.resource_monitors.global_downstream_max_connections
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
        max_active_downstream_connections: {{ int64 $e.maxDownstreamConnections }}
static_resources:
  listeners:
    - name: fusion_router_http
      address:
        socket_address: {address: 0.0.0.0, port_value: {{ int $e.listenerPort }}}
      # INBOUND: the preStop drains this listener only (inboundonly), the health listener stays up.
      traffic_direction: INBOUND
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: fusion_router_http
                codec_type: AUTO
                stream_idle_timeout: {{ $e.streamIdleTimeout }}
                request_timeout: 0s
                # Envoy's own errors (bad HTTP, 413/431/501, backend or router down) as OpenAI-shaped JSON;
                # the router's own answers pass untouched (first mapper).
                local_reply_config:
                  {{- .Files.Get "files/local-reply.yaml" | nindent 18 }}
                {{- if $e.accessLog.enabled }}
                access_log:
                  - name: envoy.access_loggers.stdout
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
                      log_format:
                        json_format:
                          time: "%START_TIME%"
                          request_id: "%REQ(X-REQUEST-ID)%"
                          method: "%REQ(:METHOD)%"
                          path: "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"
                          status: "%RESPONSE_CODE%"
                          flags: "%RESPONSE_FLAGS%"
                          details: "%RESPONSE_CODE_DETAILS%"
                          duration_ms: "%DURATION%"
                          upstream_cluster: "%UPSTREAM_CLUSTER%"
                          upstream_host: "%UPSTREAM_HOST%"
                          bytes_received: "%BYTES_RECEIVED%"
                          bytes_sent: "%BYTES_SENT%"
                          decision: "%REQ(X-VSR-SELECTED-DECISION)%"
                          model: "%REQ(X-VSR-SELECTED-MODEL)%"
                          response_path: "%REQ(X-VSR-RESPONSE-PATH)%"
                {{- end }}
                route_config:
                  name: fusion_router
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      request_body_buffer_limit: {{ int64 $e.requestBodyBufferLimitBytes }}
                      routes:
                        - match: {prefix: /}
                          route:
                            cluster_header: {{ $e.clusterHeader }}
                            timeout: {{ $e.routeTimeout }}
                          # the routing header is for Envoy, not for the backend
                          request_headers_to_remove: [{{ $e.clusterHeader }}]
                          response_headers_to_add:
                          {{- range list "x-vsr-selected-decision" "x-vsr-selected-model" "x-vsr-response-path" "x-vsr-matched-signals" "x-vsr-entry-path" "x-vsr-selection" }}
                            - header: {key: {{ . }}, value: "%REQ({{ . }})%"}
                              append_action: OVERWRITE_IF_EXISTS_OR_ADD
                          {{- end }}
                http_filters:
                  # Clients must not pick a cluster (matters most with failure_mode_allow) nor have their
                  # own x-vsr-* headers echoed back.
                  - name: envoy.filters.http.header_mutation
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
                      mutations:
                        request_mutations:
                          {{- range include "fusion-router.strippedHeaders" . | fromJsonArray }}
                          - remove: {{ . }}
                          {{- end }}
                  - name: envoy.filters.http.ext_proc
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
                      grpc_service:
                        envoy_grpc:
                          cluster_name: fusion_router
                          max_receive_message_length: {{ int64 $e.grpcMaxReceiveMessageBytes }}
                        {{- if .Values.router.extProcSecret.enabled }}
                        # the router refuses Process streams without it (placeholder filled in at start)
                        initial_metadata:
                          - key: authorization
                            value: "Bearer {{ include "fusion-router.extProcSecretPlaceholder" . }}"
                        {{- end }}
                        # another worker when one refuses the connection (restarting); never replays a
                        # request a worker already saw
                        retry_policy:
                          retry_on: connect-failure,refused-stream
                          num_retries: 3
                          retry_back_off: {base_interval: 0.05s, max_interval: 0.5s}
                          retry_host_predicate:
                            - name: envoy.retry_host_predicates.previous_hosts
                              typed_config:
                                "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate
                          host_selection_retry_max_attempts: 5
                      failure_mode_allow: {{ $e.failureModeAllow }}
                      processing_mode:
                        request_header_mode: SEND
                        response_header_mode: SKIP
                        request_body_mode: FULL_DUPLEX_STREAMED
                        response_body_mode: NONE
                        request_trailer_mode: SEND
                        response_trailer_mode: SKIP
                      allow_mode_override: true
                      # the router sends an exact content-length with a rewritten body
                      allow_content_length_header: true
                      message_timeout: {{ $e.messageTimeout }}
                      max_message_timeout: {{ $e.maxMessageTimeout }}
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
    - name: fusion_router_looper
      # Loopback only: the router's Fusion sub-calls; the looper already chose the cluster.
      address:
        socket_address: {address: 127.0.0.1, port_value: {{ int $e.looperPort }}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: fusion_router_looper
                codec_type: AUTO
                stream_idle_timeout: {{ $e.streamIdleTimeout }}
                request_timeout: 0s
                route_config:
                  name: fusion_router_looper
                  virtual_hosts:
                    - name: looper
                      domains: ["*"]
                      request_body_buffer_limit: {{ int64 $e.requestBodyBufferLimitBytes }}
                      routes:
                        - match: {prefix: /}
                          route:
                            cluster_header: {{ $e.clusterHeader }}
                            timeout: {{ $e.routeTimeout }}
                          request_headers_to_remove: [{{ $e.clusterHeader }}, x-vsr-looper-token]
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
    - name: envoy_health
      address:
        socket_address: {address: 0.0.0.0, port_value: {{ int $e.healthPort }}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: envoy_health
                route_config:
                  name: envoy_health
                  virtual_hosts:
                    - name: health
                      domains: ["*"]
                      routes:
                        - match: {path: /ready}
                          route: {cluster: envoy_admin}
                        - match: {path: /stats/prometheus}
                          route: {cluster: envoy_admin}
                        - match: {path: /live}
                          direct_response: {status: 200, body: {inline_string: "live\n"}}
                        - match: {prefix: /}
                          direct_response: {status: 404}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: fusion_router
      type: STATIC
      connect_timeout: 1s
      lb_policy: LEAST_REQUEST
      load_assignment:
        cluster_name: fusion_router
        endpoints:
          - lb_endpoints:
              {{- /* `serve --workers N`: worker i serves gRPC on grpcPort + i */}}
              {{- range $i := until (int (max 1 .Values.router.workers)) }}
              - endpoint:
                  address:
                    socket_address: {address: 127.0.0.1, port_value: {{ add (int $.Values.router.grpcPort) $i }}}
              {{- end }}
      {{- if gt (int .Values.router.workers) 1 }}
      # A worker that died (serve restarts it) or drains gets no new streams until it answers again.
      health_checks:
        - timeout: 1s
          interval: 1s
          unhealthy_threshold: 1
          healthy_threshold: 1
          grpc_health_check: {service_name: envoy.service.ext_proc.v3.ExternalProcessor}
      {{- end }}
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options:
              connection_keepalive: {interval: 30s, timeout: 5s}
      circuit_breakers:
        thresholds:
          - priority: DEFAULT
            max_connections: {{ int64 $e.routerCircuitBreaker }}
            max_pending_requests: {{ int64 $e.routerCircuitBreaker }}
            max_requests: {{ int64 $e.routerCircuitBreaker }}
          - priority: HIGH
            max_connections: {{ int64 $e.routerCircuitBreaker }}
            max_pending_requests: {{ int64 $e.routerCircuitBreaker }}
            max_requests: {{ int64 $e.routerCircuitBreaker }}
    - name: envoy_admin
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: envoy_admin
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {address: 127.0.0.1, port_value: {{ int $e.adminPort }}}
    {{- range .Values.backends }}
    {{- if and .endpoint (not .cluster) }}
    {{- $ep := include "fusion-router.parseEndpoint" .endpoint | fromYaml }}
    - name: {{ .name }}
      type: STRICT_DNS
      dns_lookup_family: V4_PREFERRED
      connect_timeout: {{ $e.connectTimeout }}
      load_assignment:
        cluster_name: {{ .name }}
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {address: {{ $ep.host | quote }}, port_value: {{ int $ep.port }}}
      circuit_breakers:
        thresholds:
          - priority: DEFAULT
            max_connections: {{ int64 $e.backendCircuitBreakers.maxConnections }}
            max_pending_requests: {{ int64 $e.backendCircuitBreakers.maxPendingRequests }}
            max_requests: {{ int64 $e.backendCircuitBreakers.maxRequests }}
            max_retries: {{ int64 $e.backendCircuitBreakers.maxRetries }}
      {{- if $ep.tls }}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: {{ $ep.host | quote }}
          common_tls_context:
            validation_context:
              trusted_ca: {filename: {{ $e.tlsCaFile | quote }}}
              match_typed_subject_alt_names:
                - san_type: DNS
                  matcher: {exact: {{ $ep.host | quote }}}
      {{- end }}
    {{- end }}
    {{- end }}
{{- end }}
