"""The real-model lane's stack: llama-server processes (from ``make llm``) behind recording proxies,
behind the real router and Envoy, driven by config/llm.yaml. One lane per test session."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import yaml

from router.config.schema import Config
from router.llamacpp import (
    LlamaServer,
    LlmInstall,
    specs_for,
    start_servers,
    stop_servers,
)
from router.local import Stack, free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "llm.yaml"
SERVERS = ROOT / "config" / "llm-servers.yaml"


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


@dataclass
class Lane:
    stack: Stack
    config: dict[str, Any]
    servers: dict[str, LlamaServer]  # backend name → its llama-server
    proxies: dict[str, str]  # backend name → recording proxy URL
    proxy_procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def backend_of(self, model: str) -> str:
        return next(m["backend"] for m in self.config["models"] if m["name"] == model)

    def served_id(self, model: str) -> str:
        m = next(m for m in self.config["models"] if m["name"] == model)
        return str(m.get("served_model_id", m["name"]))

    def client(self, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.stack.url}/v1", api_key="test-key", max_retries=0, timeout=300, **kw)

    def records(self, backend: str) -> list[dict[str, Any]]:
        return list(_get_json(f"{self.proxies[backend]}/_rec/requests"))

    def clear(self) -> None:
        for url in self.proxies.values():
            req = urllib.request.Request(f"{url}/_rec/requests", method="DELETE")
            urllib.request.urlopen(req, timeout=10).close()

    def slots(self, backend: str) -> list[dict[str, Any]]:
        """llama-server's own view of its slots (straight to the server, not through the proxy)."""
        return list(_get_json(f"{self.servers[backend].url}/slots"))

    def metric(self, backend: str, name: str) -> float:
        """A counter from llama-server's Prometheus /metrics (started with --metrics)."""
        with urllib.request.urlopen(f"{self.servers[backend].url}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        match = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.eE+-]+)$", text, re.MULTILINE)
        if match is None:
            raise AssertionError(f"{name} not in llama-server /metrics")
        return float(match.group(1))

    def stop(self) -> None:
        self.stack.stop()
        for proc in self.proxy_procs:
            stop_process(proc)
        stop_servers(list(self.servers.values()))


def _start_proxy(upstream: str, workdir: Path, name: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    ready = workdir / f"proxy-{name}.ready"
    log = (workdir / f"proxy-{name}.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.llm.recorder", "--upstream", upstream, "--port", str(port), "--ready-file", str(ready)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise RuntimeError(f"recording proxy for {name} did not start; see {workdir / f'proxy-{name}.log'}")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}"


def _with_deliberation_models(config: dict[str, Any]) -> None:
    """A decision that never matches but uses grounding and self-consistency: the router then loads the
    NLI and embedding models at start-up, so request plugins can ground and cluster (test_llm_deliberation)."""
    config.setdefault("global", {}).setdefault("classifiers", {})["models_dir"] = str(ROOT / "models")
    signals = config.setdefault("routing", {}).setdefault("signals", {})
    signals.setdefault("keywords", []).append({"name": "lane_never", "operator": "any", "keywords": ["zzz-lane-never-zzz"]})
    config["routing"].setdefault("decisions", []).append(
        {
            "name": "lane_grounded",
            "priority": 1,
            "rules": {"type": "keyword", "name": "lane_never"},
            "modelRefs": [{"model": m["name"]} for m in config["models"]],
            "algorithm": {"type": "fusion", "fusion": {"grounding": {"enabled": True, "on_error": "fail"}}},
        }
    )


def start_lane(workdir: Path, install: LlmInstall) -> Lane:
    raw = yaml.safe_load(CONFIG.read_text())
    # llama-server on one free port per backend, a recording proxy on another: the router config's
    # endpoints point at the proxies.
    direct = copy.deepcopy(raw)
    for b in direct["backends"]:
        b["endpoint"] = f"http://127.0.0.1:{free_port()}"
    specs = specs_for(SERVERS, Config.model_validate(direct))
    by_port = {s.port: s for s in specs}
    started: list[LlamaServer] = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        started = start_servers(specs, install, log_dir=workdir, timeout=180)
        servers = {}
        proxies = {}
        routed = copy.deepcopy(raw)
        for b_direct, b in zip(direct["backends"], routed["backends"], strict=True):
            port = int(b_direct["endpoint"].rsplit(":", 1)[1])
            server = next(s for s in started if s.spec is by_port[port])
            proc, url = _start_proxy(server.url, workdir, b["name"])
            procs.append(proc)
            servers[b["name"]] = server
            proxies[b["name"]] = url
            b["endpoint"] = url
        _with_deliberation_models(routed)
        path = workdir / "router.yaml"
        path.write_text(yaml.safe_dump(routed, sort_keys=False))
        stack = Stack(
            path,
            listen_port=free_port(),
            grpc_port=free_port(),
            admin_port=free_port(),
            envoy_admin_port=free_port(),
            internal_port=free_port(),
            sim_specs=[],
            workdir=workdir,
            quiet=True,
            log_format="json",
        )
        stack.start()
    except BaseException:
        for proc in procs:
            stop_process(proc)
        stop_servers(started)
        raise
    return Lane(stack, routed, servers, proxies, procs)
