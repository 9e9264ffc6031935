#!/usr/bin/env bash
# make kind-down: delete the kind cluster that scripts/kind_up.sh created (KIND_CLUSTER, default fusion-router).
set -euo pipefail

KIND_CLUSTER="${KIND_CLUSTER:-fusion-router}"

command -v kind > /dev/null || { echo "kind_down: kind is not on PATH" >&2; exit 1; }
if kind get clusters 2> /dev/null | grep -qx "$KIND_CLUSTER"; then
  kind delete cluster --name "$KIND_CLUSTER"
else
  echo "kind cluster $KIND_CLUSTER does not exist; nothing to delete"
fi
