"""Sub-window features: what the jailbreak graph scores inside every window it is given.

A short attack in a long window is diluted: its n-grams are a small share of the window's TF-IDF
vector and its tokens a small share of the mean embedding. So the graph scores the whole window *and*
every ``SUB_TOKENS``-token sub-window (stride ``SUB_STRIDE``, the last one flush with the window's
end) with the same linear head, and reports the highest score. A sub-window's embedding is the mean
of the encoder's (contextual) token states over its positions, L2-normalised; its n-grams are those
of its ids. This module computes exactly those rows in numpy, for training and for the build's
evaluation; ``head_graph.compose`` computes the same thing in ONNX.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import structlog

log = structlog.get_logger(__name__)

SUB_TOKENS = 32  # positions per sub-window, [CLS]/[SEP] included where they fall
SUB_STRIDE = 16
MAX_TOKENS = 256  # the encoder's max_length: fixes the number of sub-window slots in the graph


def slots(max_tokens: int = MAX_TOKENS, k: int = SUB_TOKENS, s: int = SUB_STRIDE) -> list[int]:
    """Start offsets of the graph's sub-window slots before clamping to the row's length."""
    return [j * s for j in range(-(-max(max_tokens - k, 0) // s) + 1)]


def sub_starts(length: int, k: int = SUB_TOKENS, s: int = SUB_STRIDE) -> list[int]:
    """Distinct sub-window starts of a row of ``length`` tokens; none when the row fits in one."""
    if length <= k:
        return []
    last = length - k
    return sorted({min(b, last) for b in slots(k=k, s=s)})


@dataclass
class Rows:
    """Feature rows of a set of texts: one whole-window row per text, then its sub-window rows."""

    ids: list[list[int]]  # token ids of each row
    emb: np.ndarray  # [rows, d] L2-normalised mean token state
    owner: np.ndarray  # [rows] index of the text the row belongs to
    start: np.ndarray  # [rows] first token position (0 for the whole window)
    whole: np.ndarray  # [rows] True for whole-window rows
    length: np.ndarray  # [texts] tokens per text ([CLS]/[SEP] included)

    def select(self, mask: np.ndarray) -> Rows:
        return Rows(
            [i for i, m in zip(self.ids, mask) if m],
            self.emb[mask],
            self.owner[mask],
            self.start[mask],
            self.whole[mask],
            self.length,
        )


def _normed(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = (x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)).astype(np.float32)
    return out


def encode_rows(encoder: object, texts: Sequence[str], batch: int = 64, subs: bool = True) -> Rows:
    """Run the encoder once per text and pool the whole window and each sub-window from its states."""
    tok = encoder.tokenizer  # type: ignore[attr-defined]  # the build passes the encoder duck-typed
    order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths → little padding
    per_text: list[list[tuple[list[int], np.ndarray, int]]] = [[] for _ in texts]
    lengths = np.zeros(len(texts), dtype=np.int64)
    t0 = time.perf_counter()
    for b in range(0, len(order), batch):
        idx = order[b : b + batch]
        enc = tok.encode([texts[j] for j in idx])

        def post(p: object, out: np.ndarray) -> list[list[tuple[list[int], np.ndarray, int]]]:
            res = []
            for r in range(out.shape[0]):
                n = int(p.attention_mask[r].sum())  # type: ignore[attr-defined]  # the build passes the encoder duck-typed
                ids = p.input_ids[r, :n].tolist()  # type: ignore[attr-defined]  # the build passes the encoder duck-typed
                h = out[r, :n].astype(np.float32)
                rows = [(ids, h.mean(axis=0), 0)]
                if subs:
                    rows += [(ids[s : s + SUB_TOKENS], h[s : s + SUB_TOKENS].mean(axis=0), s) for s in sub_starts(n)]
                res.append(rows)
            return res

        for j, rows in zip(idx, encoder._per_row(enc, post)):  # type: ignore[attr-defined]  # the build passes the encoder duck-typed
            per_text[j] = rows
            lengths[j] = len(rows[0][0])
    ids, vecs, owner, start, whole = [], [], [], [], []
    for i, rows in enumerate(per_text):
        for n, (r_ids, v, s) in enumerate(rows):
            ids.append(r_ids)
            vecs.append(v)
            owner.append(i)
            start.append(s)
            whole.append(n == 0)
    log.info(
        "jailbreak_rows_encoded",
        texts=len(texts),
        rows=len(ids),
        tokens=int(lengths.sum()),
        seconds=round(time.perf_counter() - t0, 1),
    )
    return Rows(
        ids,
        _normed(np.stack(vecs)) if vecs else np.zeros((0, 384), np.float32),
        np.array(owner, np.int64),
        np.array(start, np.int64),
        np.array(whole, bool),
        lengths,
    )


def text_max(row_scores: np.ndarray, rows: Rows, n_texts: int) -> np.ndarray:
    """Per text, the highest score over its rows (what the graph outputs)."""
    out = np.full(n_texts, -np.inf, dtype=np.float64)
    np.maximum.at(out, rows.owner, row_scores)
    return out


def row_labels(
    rows: Rows, y: Sequence[int], spans: Sequence[tuple[int, int] | None], offsets: Sequence[Sequence[tuple[int, int]]]
) -> np.ndarray:
    """Label of every row: the text's label for whole windows; for sub-windows of a benign text 0; for
    a text with a hidden attack at ``spans[i]`` (characters), 1 when the sub-window holds all of the
    attack's tokens (or lies inside an attack longer than itself), 0 when it holds none of them, and
    -1 (not used) when it cuts the attack. Sub-windows of a positive text without a span: -1."""
    out = np.empty(len(rows.ids), dtype=np.int64)
    for r in range(len(rows.ids)):
        i = int(rows.owner[r])
        if rows.whole[r] or y[i] == 0:
            out[r] = y[i]
            continue
        span = spans[i] if i < len(spans) else None
        if span is None:
            out[r] = -1
            continue
        pos = [t for t, (s, e) in enumerate(offsets[i]) if e > s and e > span[0] and s < span[1]]
        lo, hi = int(rows.start[r]), int(rows.start[r]) + len(rows.ids[r])
        inside = sum(lo <= t < hi for t in pos)
        if pos and (inside == len(pos) or (len(pos) > hi - lo and inside == hi - lo)):
            out[r] = 1
        elif inside == 0:
            out[r] = 0
        else:
            out[r] = -1
    return out
