"""Sequence classification: one label distribution per text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import OnnxModel, softmax
from .errors import ModelLoadError


@dataclass(frozen=True)
class Classification:
    probs: dict[str, float]
    label: str  # argmax
    score: float  # probability of ``label``
    truncated: bool


class SequenceClassifier(OnnxModel):
    kind: ClassVar[str] = "sequence"

    def probabilities(self, texts: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        """``[n, len(labels)]`` probabilities and a per-text truncation flag."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32), []
        enc = self.tokenizer.encode(texts)
        out = np.stack(self._per_row(enc, self._check)).astype(np.float32, copy=False)
        probs = out if self.metadata.output_type == "probabilities" else softmax(out)
        return probs, enc.truncated

    def _check(self, _: Any, out: np.ndarray) -> np.ndarray:
        if out.ndim == 3:  # [b, seq, C] token-shaped heads: use the CLS position
            out = out[:, 0, :]
        if out.ndim != 2 or out.shape[1] != len(self.labels):
            raise ModelLoadError(
                self.path, f"output {self.output_name!r} has shape {out.shape}, expected [n, {len(self.labels)}]"
            )
        return out

    def run(self, texts: Sequence[str]) -> list[Classification]:
        probs, trunc = self.probabilities(texts)
        res = []
        for row, t in zip(probs, trunc):
            k = int(row.argmax())
            res.append(
                Classification(
                    probs={lab: float(p) for lab, p in zip(self.labels, row)},
                    label=self.labels[k],
                    score=float(row[k]),
                    truncated=t,
                )
            )
        return res

    def classify(self, texts: Sequence[str]) -> list[dict[str, float]]:
        return [r.probs for r in self.run(texts)]
