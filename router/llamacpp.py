"""Start and stop llama.cpp ``llama-server`` processes (built by ``make llm``); see docs/llm.md.

Used by the real-model test lane (tests/llm) and by ``fusion-router up --llm`` (``make run-llm``).
The router config stays llama.cpp-agnostic: a small servers file (config/llm-servers.yaml) says which
GGUF model serves which backend; the port comes from the backend's endpoint and the alias from the
backend's served model id, so the two files cannot disagree.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from router.config.schema import Config

INSTALL_FILE = "installed.json"


class LlamaCppError(RuntimeError):
    pass


def cache_root() -> Path:
    """Shared cache outside the work tree, so every clone on a machine builds llama-server once."""
    env = os.environ.get("FUSION_ROUTER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fusion-router"


class InstalledModel(BaseModel):
    model_config = ConfigDict(extra="ignore")
    path: Path
    sha256: str
    chat_template: str | None = None
    license: str
    model: str


class LlmInstall(BaseModel):
    """What ``make llm`` installed (``<cache>/llm/installed.json``)."""

    model_config = ConfigDict(extra="ignore")
    lock_sha256: str
    llama_server: Path
    models: dict[str, InstalledModel]


def load_install(cache: Path | None = None) -> LlmInstall:
    path = (cache or cache_root()) / "llm" / INSTALL_FILE
    if not path.is_file():
        raise LlamaCppError(f"{path} not found: run `make llm` to build llama-server and install the models")
    try:
        install = LlmInstall.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as exc:
        raise LlamaCppError(f"{path}: unreadable ({exc}); run `make llm` again") from exc
    # In a source checkout, an install made from another version of the lock is stale.
    lock = Path(__file__).resolve().parent.parent / "scripts" / "llm" / "llm.lock.json"
    if lock.is_file() and hashlib.sha256(lock.read_bytes()).hexdigest() != install.lock_sha256:
        raise LlamaCppError(f"{path} was made from another {lock.name}: run `make llm` again")
    missing = [str(p) for p in (install.llama_server, *(m.path for m in install.models.values())) if not p.is_file()]
    if missing:
        raise LlamaCppError(f"{path} lists files that are gone ({', '.join(missing)}): run `make llm` again")
    return install


class ServerSpec(BaseModel):
    """One llama-server process. ``model`` names an entry of scripts/llm/llm.lock.json."""

    model_config = ConfigDict(extra="forbid")
    model: str
    alias: str
    port: int = Field(gt=0, lt=65536)
    host: str = "127.0.0.1"
    ctx_size: int = Field(default=4096, gt=0)
    threads: int = Field(default=1, gt=0)
    parallel: int = Field(default=2, gt=0, description="slots decoding at once; ctx_size is split among them")
    chat_template: str | None = Field(default=None, description="--chat-template; default: the lock's, else the GGUF's own")
    extra_args: list[str] = Field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class BackendServer(BaseModel):
    """An entry of config/llm-servers.yaml: the llama-server that stands behind one router backend."""

    model_config = ConfigDict(extra="forbid")
    backend: str
    model: str
    ctx_size: int = Field(default=4096, gt=0)
    threads: int = Field(default=1, gt=0)
    parallel: int = Field(default=2, gt=0)
    chat_template: str | None = None
    extra_args: list[str] = Field(default_factory=list)


class ServersFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    servers: list[BackendServer]


def specs_for(servers_path: Path, config: Config) -> list[ServerSpec]:
    """Resolve config/llm-servers.yaml against the router config: port from the backend's endpoint,
    alias from the served model id of the (single) model on that backend."""
    try:
        raw = yaml.safe_load(servers_path.read_text())
        servers = ServersFile.model_validate(raw).servers
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise LlamaCppError(f"{servers_path}: {exc}") from exc
    backends = {b.name: b for b in config.backends}
    specs = []
    for i, s in enumerate(servers):
        where = f"{servers_path}: servers[{i}]"
        backend = backends.get(s.backend)
        if backend is None or not backend.endpoint:
            raise LlamaCppError(f"{where}.backend: {s.backend!r} is not a backend with an endpoint in the router config")
        url = urlsplit(backend.endpoint)
        if url.hostname not in ("127.0.0.1", "localhost") or not url.port:
            raise LlamaCppError(f"{where}.backend: endpoint {backend.endpoint} is not a loopback host:port")
        served = sorted({m.served_id for m in config.models if m.backend == s.backend})
        if len(served) != 1:
            raise LlamaCppError(f"{where}.backend: llama-server serves one model, {s.backend!r} has {served or 'none'}")
        specs.append(
            ServerSpec(
                model=s.model,
                alias=served[0],
                port=url.port,
                ctx_size=s.ctx_size,
                threads=s.threads,
                parallel=s.parallel,
                chat_template=s.chat_template,
                extra_args=s.extra_args,
            )
        )
    return specs


def server_command(spec: ServerSpec, install: LlmInstall) -> list[str]:
    model = install.models.get(spec.model)
    if model is None:
        raise LlamaCppError(
            f"model {spec.model!r} is not installed (have: {', '.join(install.models)}); see scripts/llm/llm.lock.json"
        )
    cmd = [
        str(install.llama_server),
        "-m",
        str(model.path),
        "--alias",
        spec.alias,
        "--host",
        spec.host,
        "--port",
        str(spec.port),
        "-c",
        str(spec.ctx_size),
        "-t",
        str(spec.threads),
        "-tb",
        str(spec.threads),
        "-np",
        str(spec.parallel),
        # /metrics exposes the generation counters the tests read to prove cancellation.
        "--metrics",
        "--no-webui",
    ]
    template = spec.chat_template or model.chat_template
    if template:
        cmd += ["--chat-template", template]
    return [*cmd, *spec.extra_args]


def _health(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


class LlamaServer:
    """One llama-server process in its own session, stopped by PID (SIGTERM, then SIGKILL)."""

    def __init__(self, spec: ServerSpec, install: LlmInstall, log_dir: Path | None = None) -> None:
        self.spec = spec
        self.cmd = server_command(spec, install)
        self.name = f"llama-server-{spec.alias.replace('/', '_')}"
        self.log_path = log_dir / f"{self.name}.log" if log_dir else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.spec.url

    def start(self) -> LlamaServer:
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                self.cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        finally:
            if self.log_path:
                out.close()  # type: ignore[union-attr]  # the child keeps its own descriptor
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until /health answers 200 (the model is loaded); fails fast if the process exits."""
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LlamaCppError(
                    f"llama-server for {self.spec.alias} exited with code {self.proc.returncode} while loading{self._log_hint()}"
                )
            if _health(self.url):
                return
            time.sleep(0.1)
        raise LlamaCppError(f"llama-server for {self.spec.alias} not ready on {self.url} within {timeout:g}s{self._log_hint()}")

    def _log_hint(self) -> str:
        if self.log_path and self.log_path.exists():
            tail = self.log_path.read_text(errors="replace")[-1500:]
            return f"; log {self.log_path}:\n{tail}"
        return ""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        from router.processes import stop_process

        if self.proc is not None:
            stop_process(self.proc, grace)


def start_servers(
    specs: list[ServerSpec], install: LlmInstall, log_dir: Path | None = None, timeout: float = 120.0
) -> list[LlamaServer]:
    """Start every server, then wait for all (they load their models in parallel); on failure stop
    the ones already started."""
    servers = [LlamaServer(s, install, log_dir) for s in specs]
    try:
        for s in servers:
            s.start()
        for s in servers:
            s.wait_ready(timeout)
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def stop_servers(servers: list[LlamaServer]) -> None:
    for s in servers:
        s.stop()


def start_for_up(
    servers_path: Path, config: Config, log_dir: Path, procs: dict[str, subprocess.Popen[bytes]], timeout: float = 180.0
) -> list[LlamaServer]:
    """``fusion-router up --llm``: start the servers the file names for ``config`` (logs in ``log_dir``)
    and list them in ``procs`` so ``up`` reports them like its other processes."""
    servers = start_servers(specs_for(servers_path, config), load_install(), log_dir, timeout)
    for s in servers:
        assert s.proc is not None
        procs[s.name] = s.proc  # the key is also the log's file name, as for the stack's own processes
    return servers
