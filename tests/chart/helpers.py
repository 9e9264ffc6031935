"""Helpers for the Helm chart tests: render charts/fusion-router with the real helm binary.

helm comes from $HELM, else .tools/bin/helm (scripts/chart_test.sh installs it), else PATH; Envoy from
$ENVOY, else .venv/bin/envoy, else PATH. Without helm every test here is skipped (run
`bash scripts/chart_test.sh`, which installs it first).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "fusion-router"
EXAMPLES = {
    "default": [],
    "cpu-only": [CHART / "examples" / "cpu-only.yaml"],
    "gpu-classifiers": [CHART / "examples" / "gpu-classifiers.yaml"],
    "kind": [ROOT / "deploy" / "kind" / "values.yaml"],
}


def _find(env: str, *candidates: Path | str) -> str | None:
    if os.environ.get(env):  # an explicit choice: use it, or nothing
        value = os.environ[env]
        return value if os.access(value, os.X_OK) else shutil.which(value)
    for c in candidates:
        if isinstance(c, Path):
            if c.is_file() and os.access(c, os.X_OK):
                return str(c)
        elif shutil.which(c):
            return shutil.which(c)
    return None


HELM = _find("HELM", ROOT / ".tools" / "bin" / "helm", "helm")
ENVOY = _find("ENVOY", ROOT / ".venv" / "bin" / "envoy", "envoy")


@dataclass
class Rendered:
    docs: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d.get("kind") == kind]

    def one(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"expected one {kind} named *{name_suffix}, got {[d['metadata']['name'] for d in found]}"
        return found[0]

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]["spec"]

    def container(self, name: str) -> dict[str, Any]:
        found = [c for c in self.pod["containers"] if c["name"] == name]
        assert found, f"no container {name!r} in {[c['name'] for c in self.pod['containers']]}"
        return found[0]

    @property
    def envoy_yaml(self) -> str:
        return self.one("ConfigMap", "-envoy")["data"]["envoy.yaml"]

    @property
    def router_config_yaml(self) -> str:
        return self.one("ConfigMap", "-config")["data"]["config.yaml"]


def helm_template(*args: str, release: str = "fr", namespace: str = "fusion") -> subprocess.CompletedProcess[str]:
    assert HELM
    cmd = [HELM, "template", release, str(CHART), "--namespace", namespace, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def render(values_files: list[Path] | None = None, sets: list[str] | None = None, **kw: str) -> Rendered:
    args: list[str] = []
    for f in values_files or []:
        args += ["-f", str(f)]
    for s in sets or []:
        args += ["--set", s]
    proc = helm_template(*args, **kw)
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    return Rendered([d for d in yaml.safe_load_all(proc.stdout) if d])


def envoy_validate(config_text: str, tmp_path: Path, name: str = "envoy.yaml") -> subprocess.CompletedProcess[str]:
    assert ENVOY
    path = tmp_path / name
    path.write_text(config_text)
    # validate mode binds nothing, but still takes a shared-memory base id: use a random one.
    cmd = [ENVOY, "--mode", "validate", "-c", str(path), "--base-id", str(random.randint(1000, 60000)), "-l", "error"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
