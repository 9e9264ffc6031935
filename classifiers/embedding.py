"""Sentence embeddings: token states → pooled vector (mask-aware) → optional L2 normalisation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import OnnxModel
from .errors import ModelLoadError


@dataclass(frozen=True)
class Embedding:
    vector: np.ndarray  # [d] float32
    truncated: bool


class EmbeddingModel(OnnxModel):
    kind: ClassVar[str] = "embedding"

    def _pool(self, out: np.ndarray, mask: np.ndarray) -> np.ndarray:
        pooling = self.metadata.pooling
        if pooling == "none":
            if out.ndim != 2:
                raise ModelLoadError(self.path, f"pooling 'none' needs a [batch, dim] output, got {out.shape}")
            return out
        if out.ndim != 3:
            raise ModelLoadError(self.path, f"pooling {pooling!r} needs [batch, seq, dim], got {out.shape}")
        if pooling == "cls":
            return out[:, 0, :]
        # Mean over real tokens only: padding rows must not move the vector, or batching changes results.
        m = mask[:, :, None].astype(np.float32)
        pooled: np.ndarray = (out * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        return pooled

    def embed_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        """Vectors ``[n, d]`` and a per-text truncation flag."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32), []
        enc = self.tokenizer.encode(texts)
        rows = self._per_row(enc, lambda p, out: self._pool(out.astype(np.float32, copy=False), p.attention_mask))
        vec = np.stack(rows).astype(np.float32, copy=False)
        if self.metadata.normalize:
            vec = vec / np.clip(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12, None)
        return np.ascontiguousarray(vec), enc.truncated

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed_batch(texts)[0]

    def run(self, texts: Sequence[str]) -> list[Embedding]:
        vecs, trunc = self.embed_batch(texts)
        return [Embedding(v, t) for v, t in zip(vecs, trunc)]

    @property
    def dim(self) -> int:
        shape = next(o.shape for o in self.session.session.get_outputs() if o.name == self.output_name)
        d = shape[-1]
        if isinstance(d, int):
            return d
        return int(self.embed_batch(["x"])[0].shape[1])
