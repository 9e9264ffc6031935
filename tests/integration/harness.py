"""Start sims + router + a real Envoy for a test config on free ports; stop them by PID."""

from __future__ import annotations

import copy
import http.client
import json
from pathlib import Path
from typing import Any

import openai
import yaml

from router.local import Stack, free_port, free_port_block


def with_sim_ports(config: dict[str, Any], sims: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Give every backend a simulated server on a free port. ``sims`` maps backend name → sim knobs."""
    config = copy.deepcopy(config)
    specs = []
    for backend in config["backends"]:
        port = free_port()
        backend["endpoint"] = f"http://127.0.0.1:{port}"
        served = [m.get("served_model_id", m["name"]) for m in config["models"] if m["backend"] == backend["name"]]
        specs.append({"name": backend["name"], "port": port, "models": served, **sims.get(backend["name"], {})})
    return config, specs


def start_stack(tmp: Path, config: dict[str, Any], sims: dict[str, dict[str, Any]] | None = None, **kw: Any) -> Stack:
    config, specs = with_sim_ports(config, sims or {})
    path = tmp / "router.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return stack_on_free_ports(path, specs, tmp, **kw).start()


def stack_on_free_ports(config_path: Path, specs: list[dict[str, Any]], tmp: Path, **kw: Any) -> Stack:
    """A stack (not started) for ``config_path`` and these simulated backends, every port free, with
    ``sim_urls`` for ``sim_requests``."""
    stack = Stack(
        config_path,
        listen_port=free_port(),
        grpc_port=free_port_block(int(kw.get("workers", 1))),  # serve --workers N binds grpc_port + i
        admin_port=free_port(),
        envoy_admin_port=free_port(),
        internal_port=free_port(),
        sim_specs=specs,
        workdir=tmp,
        quiet=True,
        log_format="json",
        **kw,
    )
    stack.sim_urls = {s["name"]: f"http://127.0.0.1:{s['port']}" for s in specs}  # type: ignore[attr-defined]
    return stack


def client(stack: Stack, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key="test-key", max_retries=0, timeout=60, **kw)


def raw(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP/1.1 call, for inputs the openai client would refuse to send."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, path, body=body, headers={"content-type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def sim_requests(stack: Stack, backend: str) -> list[dict[str, Any]]:
    _, _, body = raw(stack.sim_urls[backend], "GET", "/_sim/requests")  # type: ignore[attr-defined]
    return json.loads(body)


def clear_sim_requests(stack: Stack) -> None:
    for url in stack.sim_urls.values():  # type: ignore[attr-defined]
        raw(url, "DELETE", "/_sim/requests")
