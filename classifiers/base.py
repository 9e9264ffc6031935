"""What every model kind shares: a model dir → metadata + tokenizer + session, and feeding the graph."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .errors import ModelLoadError
from .metadata import MODEL_FILE, TOKENIZER_FILE, ModelMetadata
from .session import Device, OnnxSession, create_session
from .tokenization import Encoded, Padded, TextTokenizer

_ORT_INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


class OnnxModel:
    """Base class. Subclasses implement ``run(texts) -> list[result]`` (one result per text)."""

    kind: ClassVar[str] = ""

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        device: Device = "auto",
        intra_op_threads: int | None = None,
        metadata: ModelMetadata | None = None,
    ) -> None:
        self.path = Path(model_dir)
        if not self.path.is_dir():
            raise ModelLoadError(self.path, "model directory is missing")
        self.metadata = metadata or ModelMetadata.load(self.path)
        if self.metadata.kind != self.kind:
            raise ModelLoadError(self.path, f"metadata kind is {self.metadata.kind!r}, expected {self.kind!r}")
        self.tokenizer = TextTokenizer(self.path / TOKENIZER_FILE, self.metadata.max_length, stride=self.metadata.stride)
        self.session: OnnxSession = create_session(self.path / MODEL_FILE, device, intra_op_threads)
        self._feed_types = self._check_io()
        self.output_name = self.metadata.output or self.session.output_names[0]

    @property
    def provider(self) -> str:
        """The execution provider the session actually runs on, e.g. ``CPUExecutionProvider``."""
        return self.session.provider

    @property
    def labels(self) -> tuple[str, ...]:
        return self.metadata.labels

    @property
    def max_length(self) -> int:
        return self.metadata.max_length

    def _check_io(self) -> dict[str, Any]:
        graph_inputs = {i.name: i.type for i in self.session.session.get_inputs()}
        missing = [n for n in graph_inputs if n not in self.metadata.inputs]
        if missing:
            raise ModelLoadError(
                self.session.path,
                f"graph needs inputs {missing} not listed in metadata 'inputs' {list(self.metadata.inputs)}",
            )
        out = self.metadata.output
        if out is not None and out not in self.session.output_names:
            raise ModelLoadError(
                self.session.path,
                f"metadata output {out!r} is not a graph output ({self.session.output_names})",
            )
        return {n: _ORT_INT_TYPES.get(t, np.int64) for n, t in graph_inputs.items()}

    def _feeds(self, batch: Padded) -> dict[str, np.ndarray]:
        arrays = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
        }
        try:
            return {n: arrays[n].astype(dt, copy=False) for n, dt in self._feed_types.items()}
        except KeyError as exc:
            raise ModelLoadError(self.session.path, f"unsupported graph input {exc}") from None

    def _forward(self, batch: Padded) -> np.ndarray:
        return np.asarray(self.session.run([self.output_name], self._feeds(batch))[0])

    def _per_row(self, enc: Encoded, post: Callable[[Padded, np.ndarray], Sequence[Any] | np.ndarray]) -> list[Any]:
        """Run every row of ``enc`` in length groups; ``post(padded, output)`` maps a group's raw
        output to one result per row. Returns results in row order."""
        out: list[Any] = [None] * len(enc.rows)
        lengths = [len(e.ids) for e in enc.rows]
        for group in buckets(lengths):
            padded = self.tokenizer.pad([enc.rows[i] for i in group])
            for i, res in zip(group, post(padded, self._forward(padded))):
                out[i] = res
        return out

    def run(self, texts: Sequence[str]) -> list[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def warmup(self) -> None:
        """One tiny inference so the first real request doesn't pay for lazy allocations."""
        self.run(["warm-up"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, provider={self.provider!r})"


# Attention cells (rows × padded length²) per ONNX call. A call's activation memory grows with them,
# and the session keeps its largest: measured on the jailbreak model (MiniLM-L6 int8) scanning 38
# windows of 256 tokens, resident memory grew 182 MB at 8 rows per call, 82 MB at 4, 37 MB at 2 —
# and 32 rows (the batcher's default batch) held over 1 GB across the three default models. Two
# 256-token rows per call keep a long prompt's scan bounded at about the same speed; short rows still
# batch by the hundred.
MAX_ATTENTION_CELLS = 2 * 256 * 256


# What one ONNX call costs, in units of one token through the encoder (fitted on single-threaded
# MiniLM-L6 int8 and the PII BERT on the 2-core dev box, rows x length from 1 x 8 to 16 x 128 and 4 x 256):
# a call costs about as much as 15 tokens more, and attention adds about length/1300 per token. The
# other models in this project are the same kind of small BERT, so one model of cost serves them all.
CALL_TOKENS = 15.0
ATTENTION_TOKENS = 1 / 1300
MAX_BUCKET_ROWS = 64  # bounds the search below; a bigger group would gain nothing measurable


def call_cost(rows: int, length: int) -> float:
    """Estimated cost of one call over ``rows`` rows padded to ``length`` tokens (token units)."""
    return CALL_TOKENS + rows * length * (1.0 + length * ATTENTION_TOKENS)


def buckets(lengths: Sequence[int], cells: int = MAX_ATTENTION_CELLS) -> list[list[int]]:
    """Split row indices into ONNX calls of similar length at the least estimated cost.

    Rows are sorted by length and cut into contiguous groups (each padded to its longest row) so that
    the summed :func:`call_cost` is smallest: rows share a call only when the padding costs less than
    the call it saves (a 10-token prompt is never padded to a 256-token neighbour), and no call holds
    more than ``cells`` attention cells (rows x length², which bounds its activation memory).
    Returns groups of indices into ``lengths``; callers put results back by index, so the order of
    results never depends on the grouping.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    ls = [max(int(lengths[i]), 1) for i in order]
    n = len(ls)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = ls[j - 1]
        most = max(1, min(MAX_BUCKET_ROWS, cells // (longest * longest)))
        for i in range(max(0, j - most), j):
            c = best[i] + call_cost(j - i, longest)
            if c < best[j]:
                best[j], cut[j] = c, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def split_by_attention(groups: list[list[int]], lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Split each length group so that rows × (its longest row)² stays within ``budget``."""
    out: list[list[int]] = []
    for group in groups:
        longest = max(max(lengths[i] for i in group), 1)
        size = max(1, budget // (longest * longest))
        out += [group[k : k + size] for k in range(0, len(group), size)]
    return out


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=axis, keepdims=True)
    return out
