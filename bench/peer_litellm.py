"""LiteLLM's proxy as a peer target for ``bench/router_bench.py --peer litellm``.

LiteLLM goes into a venv of its own under ``bench/.work/`` (git-ignored), never into the project's: it
pins its own versions of shared packages (pydantic, aiohttp, openai ...) and CI never installs it. The
proxy routes the bench's model name to the same simulated backend the router uses, so both gateways see
the same request, backend, client and concurrency. It runs in its own session and is stopped by PID.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from common import ROOT, Cleanup, http_ok, wait_until

WORK = ROOT / "bench" / ".work"
VENV = WORK / "litellm-venv"
# The newest LiteLLM whose `[proxy]` extra resolves from PyPI alone today: 1.108.8+ pin
# litellm-enterprise / litellm-proxy-extras post-releases that are not published there, and 1.110 needs a
# `litellm-proxy` package that is not published at all. Pinned, never "latest": 1.107.0 was a compromised
# release (a PyPI package exists only to scan for it).
DEFAULT_VERSION = "1.108.7"
# What LiteLLM sends the simulated backend, which checks no key.
API_KEY = "sk-bench-backend-not-checked"


@dataclass(frozen=True)
class PeerInfo:
    name: str
    version: str
    python: Path
    url: str


def _installed_version(python: Path) -> str | None:
    if not python.exists():
        return None
    proc = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def ensure_installed(version: str = DEFAULT_VERSION, venv: Path = VENV) -> Path:
    """The venv's python with ``litellm[proxy]==version``; creates or upgrades the venv when needed."""
    python = venv / "bin" / "python"
    found = _installed_version(python)
    if found == version:
        return python
    if not python.exists():
        print(f"peer: creating {venv} (LiteLLM's own venv)", flush=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    print(f"peer: installing litellm[proxy]=={version} into {venv} (found {found or 'nothing'}; a few minutes, once)", flush=True)
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"litellm[proxy]=={version}"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0 or _installed_version(python) != version:
        tail = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines() if not line.startswith("WARNING: Location"))
        raise RuntimeError(f"could not install litellm[proxy]=={version} into {venv}:\n{tail[-2000:]}")
    return python


def write_config(path: Path, model_name: str, served_model: str, backend_port: int) -> Path:
    """One model entry: the client's model name → the simulated backend's model, OpenAI-compatible."""
    path.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {
                        "model_name": model_name,
                        "litellm_params": {
                            "model": f"openai/{served_model}",
                            "api_base": f"http://127.0.0.1:{backend_port}/v1",
                            "api_key": API_KEY,
                        },
                    }
                ],
            },
            sort_keys=False,
        )
    )
    return path


def new_master_key() -> str:
    """LiteLLM's proxy refuses to start without a master key (every request would be unauthenticated), so
    it runs as deployed: clients send ``Authorization: Bearer <key>`` and the proxy checks it."""
    return "sk-" + secrets.token_hex(32)


def start(
    cleanup: Cleanup, python: Path, config: Path, port: int, workdir: Path, master_key: str, timeout: float = 180.0
) -> subprocess.Popen:
    """``litellm --config`` on 127.0.0.1 with its defaults (uvicorn, one worker), in its own session."""
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "LITELLM_MASTER_KEY": master_key,
        # Use the cost map shipped in the package: the default start fetches it from the internet.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    log = open(workdir / "litellm.log", "ab")  # noqa: SIM115 - lives with the process
    proc = cleanup.session(
        subprocess.Popen(
            [
                str(python.parent / "litellm"),
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--num_workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
    )
    started = time.monotonic()
    wait_until("LiteLLM's proxy", lambda: http_ok(f"http://127.0.0.1:{port}/health/liveliness"), timeout, proc)
    print(
        f"peer: LiteLLM proxy ready on :{port} after {time.monotonic() - started:.0f}s (log {workdir / 'litellm.log'})",
        flush=True,
    )
    return proc
