"""Local encoder models as a looper service: sentence embeddings and entailment, no LLM calls.

Algorithms see only the ``Encoders`` protocol on their ``LooperRun``; the runner provides it from the
process's classifier runtime (``RuntimeEncoders``), so a looper never imports the runtime, ONNX or
the micro-batcher. Model names are directory names under ``models/`` (``embedding``, ``nli``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from router.signals.runtime import ClassifierRuntime


@dataclass(frozen=True, slots=True)
class Entailment:
    """One (premise, hypothesis) verdict: probabilities summing to 1."""

    entailment: float
    neutral: float
    contradiction: float
    truncated: bool = False

    @property
    def label(self) -> str:
        return max(
            ("entailment", self.entailment), ("neutral", self.neutral), ("contradiction", self.contradiction), key=lambda x: x[1]
        )[0]


class Encoders(Protocol):
    async def embed(self, model: str, texts: Sequence[str]) -> np.ndarray:
        """``[n, d]`` L2-normalised sentence embeddings."""
        ...

    async def entail(self, model: str, pairs: Sequence[tuple[str, str]]) -> list[Entailment]:
        """One verdict per (premise, hypothesis)."""
        ...


class ModelUnavailable(RuntimeError):
    """The model a looper needs is not loaded (and its decision allowed that: ``on_error: skip``)."""


class RuntimeEncoders:
    """``Encoders`` over the classifier runtime (``router.signals.models.ModelRuntime``): every call
    goes through that model's micro-batcher, so concurrent requests share ONNX calls."""

    def __init__(self, runtime: ClassifierRuntime | None, unavailable: dict[str, str] | None = None):
        self.runtime = runtime
        self.unavailable = unavailable or {}  # model → why it could not be loaded at start-up

    def _check(self, model: str) -> ClassifierRuntime:
        if self.runtime is None:
            raise ModelUnavailable(f"model {model!r}: no classifier runtime in this process")
        if model in self.unavailable:
            raise ModelUnavailable(f"model {model!r}: {self.unavailable[model]}")
        return self.runtime

    async def embed(self, model: str, texts: Sequence[str]) -> np.ndarray:
        runtime = self._check(model)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        embs = await runtime.run_many(model, list(texts))
        vecs = np.stack([np.asarray(e.vector, dtype=np.float32) for e in embs])
        normed: np.ndarray = vecs / np.clip(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12, None)
        return normed

    async def entail(self, model: str, pairs: Sequence[tuple[str, str]]) -> list[Entailment]:
        runtime = self._check(model)
        if not pairs:
            return []
        out = await runtime.run_many(model, [(p, h) for p, h in pairs])
        return [
            Entailment(
                r.probs.get("entailment", 0.0), r.probs.get("neutral", 0.0), r.probs.get("contradiction", 0.0), bool(r.truncated)
            )
            for r in out
        ]
