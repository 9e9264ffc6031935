#!/usr/bin/env bash
# make kind-up: a local Kubernetes cluster (kind) running fusion-router in front of two simulated vLLM
# backends, then one smoke request through Envoy. Needs docker, kind, kubectl and helm v3 on PATH
# (helm falls back to .tools/bin/helm, which scripts/chart_test.sh installs).
#
# Environment knobs:
#   KIND_CLUSTER=fusion-router   cluster name            IMAGE=fusion-router:dev   router image
#   NAMESPACE=fusion             router namespace        LOCAL_PORT=18801          port-forward port
#   SKIP_BUILD=1                 reuse an image already built (docker build skipped)
#   ENVOY_IMAGE=envoyproxy/envoy:v1.40.0  pre-pulled and loaded into the node (avoids registry limits)
# Tear down with make kind-down.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KIND_CLUSTER="${KIND_CLUSTER:-fusion-router}"
IMAGE="${IMAGE:-fusion-router:dev}"
ENVOY_IMAGE="${ENVOY_IMAGE:-envoyproxy/envoy:v1.40.0}"
NAMESPACE="${NAMESPACE:-fusion}"
RELEASE="${RELEASE:-fusion-router}"
LOCAL_PORT="${LOCAL_PORT:-18801}"
HELM="${HELM:-}"

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'kind_up: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl; do
  command -v "$tool" > /dev/null || die "$tool is not on PATH (see docs/deploy.md: kind recipe)"
done
if [[ -z "$HELM" ]]; then
  if command -v helm > /dev/null; then HELM=helm
  elif [[ -x "$ROOT/.tools/bin/helm" ]]; then HELM="$ROOT/.tools/bin/helm"
  else die "helm v3 is not on PATH (bash scripts/chart_test.sh installs one into .tools/bin)"
  fi
fi
docker info > /dev/null 2>&1 || die "the Docker engine is not reachable (docker info failed)"

log "kind cluster $KIND_CLUSTER"
if kind get clusters 2> /dev/null | grep -qx "$KIND_CLUSTER"; then
  echo "exists, reusing it"
else
  kind create cluster --name "$KIND_CLUSTER" --config "$ROOT/deploy/kind/kind-config.yaml" --wait 120s
fi
kubectl config use-context "kind-$KIND_CLUSTER" > /dev/null

if [[ "${SKIP_BUILD:-0}" != "1" ]]; then
  log "docker build $IMAGE"
  docker build -t "$IMAGE" "$ROOT"
fi
log "kind load $IMAGE (+ $ENVOY_IMAGE)"
kind load docker-image "$IMAGE" --name "$KIND_CLUSTER"
if docker image inspect "$ENVOY_IMAGE" > /dev/null 2>&1 || docker pull "$ENVOY_IMAGE"; then
  kind load docker-image "$ENVOY_IMAGE" --name "$KIND_CLUSTER"
else
  echo "could not pull $ENVOY_IMAGE here; the node will pull it itself"
fi

log "simulated vLLM backends (namespace llm)"
# The simulators run from the router image; point them at $IMAGE when it is not the default.
sed "s|image: fusion-router:dev|image: ${IMAGE}|" "$ROOT/deploy/kind/sim-backends.yaml" | kubectl apply -f -
kubectl -n llm rollout status deploy/qwen3-8b --timeout=180s
kubectl -n llm rollout status deploy/qwen3-32b --timeout=180s

log "helm upgrade --install $RELEASE (namespace $NAMESPACE)"
"$HELM" upgrade --install "$RELEASE" "$ROOT/charts/fusion-router" \
  --namespace "$NAMESPACE" --create-namespace \
  -f "$ROOT/deploy/kind/values.yaml" \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
  --set envoy.image.repository="${ENVOY_IMAGE%:*}" --set envoy.image.tag="${ENVOY_IMAGE##*:}" \
  --wait --timeout 10m
kubectl -n "$NAMESPACE" rollout status "deploy/$RELEASE" --timeout=300s

log "smoke request through Envoy (port-forward svc/$RELEASE $LOCAL_PORT:8801)"
kubectl -n "$NAMESPACE" port-forward "svc/$RELEASE" "$LOCAL_PORT:8801" > /tmp/fusion-router-port-forward.log 2>&1 &
PF_PID=$!
trap 'kill "$PF_PID" 2> /dev/null || true' EXIT
for _ in $(seq 1 50); do
  curl -s -o /dev/null "http://127.0.0.1:$LOCAL_PORT/" && break
  sleep 0.2
done

BODY='{"model": "vllm-sr/auto", "messages": [{"role": "user", "content": "Write a python function that reverses a list."}]}'
HEADERS="$(mktemp)"
RESPONSE="$(curl -sS -D "$HEADERS" -o - -w '\n%{http_code}' \
  "http://127.0.0.1:$LOCAL_PORT/v1/chat/completions" \
  -H 'content-type: application/json' -d "$BODY")"
STATUS="${RESPONSE##*$'\n'}"
echo "${RESPONSE%$'\n'*}" | head -c 600; echo
grep -i '^x-vsr-' "$HEADERS" || true
rm -f "$HEADERS"
[[ "$STATUS" == "200" ]] || die "smoke request failed: HTTP $STATUS (kubectl -n $NAMESPACE logs deploy/$RELEASE -c router / -c envoy)"

log "fusion-router is up"
cat << EOF
  kubectl -n $NAMESPACE port-forward svc/$RELEASE $LOCAL_PORT:8801 &
  curl -s http://127.0.0.1:$LOCAL_PORT/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model": "vllm-sr/fusion", "messages": [{"role": "user", "content": "Is a hot dog a sandwich?"}]}'
Tear down: make kind-down
EOF
