"""Pair classification (NLI / entailment): one label distribution per (premise, hypothesis) pair.

The tokenizer writes the pair as ``[CLS] premise [SEP] hypothesis [SEP]`` with segment ids 0/1; a
pair that does not fit ``max_length`` is cut longest side first and flagged ``truncated``. Items may
also be plain strings (the batcher's warm-up): a string is paired with itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from .base import OnnxModel, softmax
from .errors import ModelLoadError
from .sequence import Classification
from .tokenization import CHARS_PER_TOKEN_CAP, Encoded

PairItem = tuple[str, str] | str


class PairClassifier(OnnxModel):
    kind: ClassVar[str] = "pair"

    def encode_pairs(self, items: Sequence[PairItem]) -> Encoded:
        cap = self.max_length * CHARS_PER_TOKEN_CAP
        pairs: list[tuple[str, str]] = [(it, it) if isinstance(it, str) else (str(it[0]), str(it[1])) for it in items]
        cut = [len(p) > cap or len(h) > cap for p, h in pairs]
        encs = self.tokenizer.tokenizer.encode_batch([(p[:cap], h[:cap]) for p, h in pairs])
        return Encoded(list(encs), list(range(len(encs))), [bool(e.overflowing) or c for e, c in zip(encs, cut, strict=True)])

    def probabilities(self, items: Sequence[PairItem]) -> tuple[np.ndarray, list[bool]]:
        if not items:
            return np.zeros((0, len(self.labels)), dtype=np.float32), []
        enc = self.encode_pairs(items)
        out = np.stack(self._per_row(enc, self._check)).astype(np.float32, copy=False)
        probs = out if self.metadata.output_type == "probabilities" else softmax(out)
        return probs, enc.truncated

    def _check(self, _: object, out: np.ndarray) -> Any:
        if out.ndim != 2 or out.shape[1] != len(self.labels):
            raise ModelLoadError(
                self.path, f"output {self.output_name!r} has shape {out.shape}, expected [n, {len(self.labels)}]"
            )
        return out

    def run(self, items: Sequence[PairItem]) -> list[Classification]:
        probs, trunc = self.probabilities(items)
        out = []
        for row, t in zip(probs, trunc, strict=True):
            k = int(row.argmax())
            out.append(
                Classification(
                    probs={lab: float(p) for lab, p in zip(self.labels, row, strict=True)},
                    label=self.labels[k],
                    score=float(row[k]),
                    truncated=t,
                )
            )
        return out
