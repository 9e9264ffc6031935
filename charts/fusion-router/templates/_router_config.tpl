{{/*
The router config file: .Values.routerConfig plus the keys the chart owns (see values.yaml):
backends (from .Values.backends), global.router.cluster_header, global.router.drain_timeout_seconds and,
when unset, global.integrations.looper.endpoint (the pod-local Envoy, so looper sub-calls come back to
this very router process: the looper token is per process).
*/}}
{{- define "fusion-router.routerConfig" -}}
{{- $cfg := deepCopy (.Values.routerConfig | default dict) }}
{{- $backends := list }}
{{- range .Values.backends }}
{{- $b := dict "name" .name "type" (.type | default "openai-compatible") }}
{{- with .endpoint }}{{ $_ := set $b "endpoint" . }}{{ end }}
{{- with .cluster }}{{ $_ := set $b "cluster" . }}{{ end }}
{{- with .apiKeyEnv }}{{ $_ := set $b "api_key_env" . }}{{ end }}
{{- $backends = append $backends $b }}
{{- end }}
{{- $_ := set $cfg "backends" $backends }}
{{- $global := get $cfg "global" | default dict }}
{{- $router := get $global "router" | default dict }}
{{- $_ := set $router "cluster_header" .Values.envoy.clusterHeader }}
{{- $_ := set $router "drain_timeout_seconds" (int .Values.drain.timeoutSeconds) }}
{{- $_ := set $global "router" $router }}
{{- if .Values.envoy.enabled }}
{{- $integrations := get $global "integrations" | default dict }}
{{- $looper := get $integrations "looper" | default dict }}
{{- if not (get $looper "endpoint") }}
{{- $_ := set $looper "endpoint" (printf "http://127.0.0.1:%d/v1/chat/completions" (int .Values.envoy.looperPort)) }}
{{- end }}
{{- $_ := set $integrations "looper" $looper }}
{{- $_ := set $global "integrations" $integrations }}
{{- end }}
{{- $_ := set $cfg "global" $global }}
{{- toYaml $cfg }}
{{- end }}
