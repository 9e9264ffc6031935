{{/* Names ---------------------------------------------------------------------------------- */}}

{{- define "fusion-router.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fusion-router.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "fusion-router.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fusion-router.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fusion-router.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "fusion-router.labels" -}}
helm.sh/chart: {{ include "fusion-router.chart" . }}
{{ include "fusion-router.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fusion-router
{{- end }}

{{- define "fusion-router.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fusion-router.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "fusion-router.routerConfigMapName" -}}
{{- if .Values.existingConfigMap }}
{{- .Values.existingConfigMap }}
{{- else }}
{{- printf "%s-config" (include "fusion-router.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "fusion-router.routerConfigKey" -}}
{{- if .Values.existingConfigMap }}{{ .Values.existingConfigMapKey }}{{ else }}config.yaml{{ end }}
{{- end }}

{{- define "fusion-router.envoyConfigMapName" -}}
{{- printf "%s-envoy" (include "fusion-router.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fusion-router.extProcSecretName" -}}
{{- if .Values.router.extProcSecret.existingSecret }}
{{- .Values.router.extProcSecret.existingSecret }}
{{- else }}
{{- printf "%s-ext-proc" (include "fusion-router.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Where the router's gRPC port binds: loopback while only the pod's own Envoy calls it. */}}
{{- define "fusion-router.grpcHost" -}}
{{- if or (not .Values.envoy.enabled) .Values.service.exposeRouterGrpc }}0.0.0.0{{ else }}127.0.0.1{{ end }}
{{- end }}

{{/* The router image: the CUDA variant when gpu.enabled. */}}
{{- define "fusion-router.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.gpu.enabled }}
{{- $tag = default (printf "%s-cuda" $tag) .Values.gpu.imageTag }}
{{- end }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/* Drain timings (see values.yaml `drain`). */}}
{{- define "fusion-router.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add (mul 2 (int .Values.drain.timeoutSeconds)) 15 }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Path the router CLI reads its config from. */}}
{{- define "fusion-router.configDir" -}}/etc/fusion-router{{- end }}

{{/*
Parse a backend endpoint into scheme/host/port/tls. Usage:
  {{- $ep := include "fusion-router.parseEndpoint" .endpoint | fromYaml }}
*/}}
{{- define "fusion-router.parseEndpoint" -}}
{{- $u := urlParse . }}
{{- $tls := eq $u.scheme "https" }}
{{- $hostport := $u.host }}
{{- $host := $hostport }}
{{- $port := ternary 443 80 $tls }}
{{- if regexMatch ":[0-9]+$" $hostport }}
{{- $host = regexReplaceAll ":[0-9]+$" $hostport "" }}
{{- $port = regexFind "[0-9]+$" $hostport | int }}
{{- end }}
scheme: {{ $u.scheme }}
host: {{ $host | quote }}
port: {{ $port }}
tls: {{ $tls }}
{{- end }}

{{/* Sanity checks the JSON schema cannot express. Included by the Deployment. */}}
{{- define "fusion-router.validate" -}}
{{- $seen := dict }}
{{- range $i, $b := .Values.backends }}
{{- if hasKey $seen $b.name }}
{{- fail (printf "backends[%d].name: duplicate backend name %q (each backend becomes one Envoy cluster)" $i $b.name) }}
{{- end }}
{{- $_ := set $seen $b.name true }}
{{- if has $b.name (list "fusion_router" "envoy_admin") }}
{{- fail (printf "backends[%d].name: %q is reserved for the chart's own Envoy clusters" $i $b.name) }}
{{- end }}
{{- end }}
{{- if and (not .Values.existingConfigMap) (hasKey (.Values.routerConfig | default dict) "backends") }}
{{- fail "routerConfig.backends: do not set it; the chart writes it from .Values.backends (which also renders the Envoy clusters)" }}
{{- end }}
{{- if and (not .Values.existingConfigMap) (empty .Values.backends) }}
{{- fail "backends: list at least one backend (name + endpoint); the router config needs one" }}
{{- end }}
{{- $envs := dict }}
{{- range .Values.apiKeys }}{{ $_ := set $envs .env true }}{{ end }}
{{- range $i, $b := .Values.backends }}
{{- if and $b.apiKeyEnv (not (hasKey $envs $b.apiKeyEnv)) }}
{{- fail (printf "backends[%d].apiKeyEnv: %q is not filled by any apiKeys[] entry (add {env: %s, secretName: ..., secretKey: ...})" $i $b.apiKeyEnv $b.apiKeyEnv) }}
{{- end }}
{{- end }}
{{- $ports := list (int .Values.router.grpcPort) (int .Values.router.adminPort) }}
{{- if .Values.envoy.enabled }}
{{- $ports = concat $ports (list (int .Values.envoy.listenerPort) (int .Values.envoy.adminPort) (int .Values.envoy.healthPort)) }}
{{- end }}
{{- if ne (len $ports) (len (uniq $ports)) }}
{{- fail (printf "ports: router.grpcPort, router.adminPort, envoy.listenerPort, envoy.adminPort and envoy.healthPort share one pod network and must differ (got %v)" $ports) }}
{{- end }}
{{- if eq (include "fusion-router.grpcHost" .) "127.0.0.1" }}
{{- range $probe := list "startupProbe" "livenessProbe" "readinessProbe" }}
{{- if hasKey (get $.Values.router $probe | default dict) "grpc" }}
{{- fail (printf "router.%s: a grpc probe cannot reach the router's gRPC port, which binds 127.0.0.1 while Envoy runs in the pod; use httpGet on port metrics (/healthz, /readyz)" $probe) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.autoscaling.enabled (lt (int .Values.autoscaling.maxReplicas) (int .Values.autoscaling.minReplicas)) }}
{{- fail "autoscaling.maxReplicas must be >= autoscaling.minReplicas" }}
{{- end }}
{{- end }}
