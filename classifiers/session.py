"""ONNX Runtime sessions: pick CUDA when it really works, else CPU, and say which one is in use."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
import structlog

from .errors import DeviceUnavailableError, ModelLoadError

Device = Literal["auto", "cuda", "cpu"]

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

log = structlog.get_logger(__name__)


def _cgroup_cpu_limit() -> int | None:
    """CPU limit of the container (cgroup v2 ``cpu.max``), which affinity alone doesn't show in k8s."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, int(int(quota) / int(period)))


def usable_cores() -> int:
    """Cores this process may use: CPU affinity, capped by the container's cgroup CPU limit."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, limit)
    return max(1, cores)


def default_threads() -> int:
    """Intra-op threads: ``FUSION_ROUTER_ORT_THREADS``, else the cores we may use (capped at 8).

    Beyond a handful of threads small BERT-style graphs stop getting faster and start fighting the
    event loop and the other models for the same cores.
    """
    env = os.environ.get("FUSION_ROUTER_ORT_THREADS")
    if env:
        return max(1, int(env))
    return max(1, min(usable_cores(), 8))


@dataclass(frozen=True)
class ThreadPlan:
    """How a server running several models under concurrent load uses its cores: every model's
    batcher runs ``workers`` calls at once, each call on ``intra_op_threads`` threads."""

    intra_op_threads: int
    workers: int
    cores: int


def thread_plan(cores: int | None = None, busy_models: int = 2, intra_op_threads: int = 0, workers: int = 0) -> ThreadPlan:
    """Threads for concurrent load: ``busy_models`` models (the shared encoder and the PII model) each
    get an equal share of the cores, as concurrent single calls rather than one wide call.

    * 1-2 cores: one thread per call, one call per model. The two models then run side by side on the
      two cores; with two intra-op threads each, four threads fought over two cores, and a short
      prompt's call spent ~15 % more CPU in thread hand-offs (measured: 8.2 vs 7.1 CPU-ms for
      MiniLM-L6 on one short prompt).
    * more cores: two threads per call (small BERT graphs gain little beyond two on rows of <= 256
      tokens) and ``cores / (2 x busy_models)`` concurrent calls per model, so a burst of windows
      spreads over the cores instead of queueing behind one wide call. Not measured here (no such box
      in this environment): a reasoned default; ``intra_op_threads`` / ``workers`` override it.
    ``FUSION_ROUTER_ORT_THREADS`` still overrides the intra-op threads.
    """
    n = cores or usable_cores()
    env = os.environ.get("FUSION_ROUTER_ORT_THREADS")
    intra = intra_op_threads or (max(1, int(env)) if env else (1 if n <= 2 else 2))
    work = workers or max(1, n // (intra * max(1, busy_models)))
    return ThreadPlan(intra, work, n)


def session_options(intra_op_threads: int | None = None) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads or default_threads()
    # One graph runs at a time per call; parallelism comes from intra-op threads and from batching.
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # we log the provider choice ourselves; ORT's fallback warning is noise
    # No busy-waiting between runs: several sessions (embedding, jailbreak, PII) share a few cores with
    # the event loop, and spinning pools starve each other -- measured 115 ms vs 16 ms for the three
    # models back to back on 2 cores. FUSION_ROUTER_ORT_SPIN=1 restores ORT's default.
    spin = "1" if os.environ.get("FUSION_ROUTER_ORT_SPIN") == "1" else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    # Memory patterns are planned (and kept) per input shape, and batches come in many shapes: measured
    # on MiniLM-L6 int8 at 4 x 256 tokens, the peak above idle was 96 MB with patterns and 29 MB
    # without (the arena then reuses its blocks); with neither arena nor patterns, 105 MB. Calls are
    # capped in size (classifiers.base.MAX_ATTENTION_CELLS), so the arena stays bounded too.
    opts.enable_mem_pattern = False
    return opts


def cuda_available() -> bool:
    """True when the installed ORT build offers the CUDA provider (it may still fail to start)."""
    return CUDA in ort.get_available_providers()


@dataclass
class OnnxSession:
    """An ``InferenceSession`` plus the provider it actually runs on."""

    session: ort.InferenceSession
    path: Path
    provider: str
    device: str

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def run(self, outputs: list[str] | None, feeds: Mapping[str, np.ndarray]) -> list[Any]:
        return list(self.session.run(outputs, dict(feeds)))


def _start(path: Path, providers: list[str], opts: ort.SessionOptions) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/NoSuchFile types
        raise ModelLoadError(path, f"ONNX Runtime rejected the model: {exc}") from exc


def create_session(
    path: str | os.PathLike[str],
    device: Device = "auto",
    intra_op_threads: int | None = None,
) -> OnnxSession:
    """Start a session on ``device``.

    * ``auto``: CUDA when ORT offers it *and* the session really starts on it, else CPU.
    * ``cuda``: CUDA or :class:`DeviceUnavailableError` -- asking for a GPU and silently getting a CPU
      would hide a misconfigured deployment behind 10x latency.
    * ``cpu``: CPU only.
    """
    p = Path(path)
    if device not in ("auto", "cuda", "cpu"):
        raise ValueError(f"device must be auto|cuda|cpu, got {device!r}")
    if not p.is_file():
        raise ModelLoadError(p, "model file is missing")
    opts = session_options(intra_op_threads)

    sess: ort.InferenceSession | None = None
    if device in ("auto", "cuda"):
        if cuda_available():
            try:
                sess = _start(p, [CUDA, CPU], opts)
            except ModelLoadError:
                if device == "cuda":
                    raise
                sess = None
            # ORT quietly drops CUDA when its libraries or the GPU are missing: check what we got.
            if sess is not None and sess.get_providers()[0] != CUDA:
                sess = None
        if sess is None and device == "cuda":
            raise DeviceUnavailableError(
                p,
                "device=cuda requested but CUDAExecutionProvider is unavailable "
                f"(available: {ort.get_available_providers()}); install onnxruntime-gpu on a GPU host "
                "or use device=auto|cpu",
            )
    if sess is None:
        sess = _start(p, [CPU], opts)

    provider = sess.get_providers()[0]
    log.info(
        "onnx_session_started",
        model=str(p),
        device=device,
        provider=provider,
        intra_op_threads=opts.intra_op_num_threads,
    )
    return OnnxSession(session=sess, path=p, provider=provider, device=device)
