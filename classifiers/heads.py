"""Heads over a shared encoder pass: what a model computes from the encoder's token states.

One encoder pass (``last_hidden_state`` [rows, T, d] of a padded batch) can feed several heads, so a
window read by the embedding signals *and* the jailbreak guard is encoded once:

* :class:`PoolingHead` -- the sentence embedding (masked mean or CLS, optional L2), exactly what
  :class:`~classifiers.embedding.EmbeddingModel` returns.
* :class:`TfidfLinearHead` -- the jailbreak classifier's logistic regression over
  [pooled embedding ⊕ wordpiece TF-IDF 1-2-grams], scored on the whole window and on every
  ``sub_tokens``-token sub-window (stride ``sub_stride``), max taken: the same function as the head
  ``classifiers.build.head_graph.compose`` appends to the encoder in the full ONNX graph, computed
  sparsely (a window has a few hundred n-grams, the vocabulary 100k), so it costs a fraction of a
  millisecond instead of a dense [sub-windows x n-grams] tensor per window.

A head is stored next to the full model as ``head.npz`` and named in ``metadata.json``
(``shared_encoder``, see docs/models.md); the full ``model.onnx`` stays, so the directory is still an
ordinary sequence classifier for anyone who loads it alone.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from .errors import ModelLoadError
from .tokenization import Padded


class Head(Protocol):
    name: str
    build_id: str  # changes whenever the head's output could change (keys the result cache)

    def apply(self, hidden: np.ndarray, batch: Padded) -> Sequence[Any]:
        """One result per row of ``batch``; ``hidden`` is the encoder's [rows, T, d] float32 output."""
        ...


def _l2(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)
    return out


@dataclass
class PoolingHead:
    """Sentence embedding from token states: mask-aware mean (or CLS), optionally L2-normalised."""

    name: str
    pooling: str = "mean"  # mean | cls
    normalize: bool = True
    build_id: str = ""

    def __post_init__(self) -> None:
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"a pooling head needs pooling mean|cls, got {self.pooling!r}")
        self.build_id = self.build_id or f"pool:{self.pooling}:{int(self.normalize)}"

    def pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.pooling == "cls":
            vec = hidden[:, 0, :]
        else:
            # Padding positions must not move the vector, or batching would change results.
            m = mask[:, :, None].astype(np.float32)
            vec = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        vec = vec.astype(np.float32, copy=False)
        return _l2(vec).astype(np.float32, copy=False) if self.normalize else vec

    def apply(self, hidden: np.ndarray, batch: Padded) -> Sequence[np.ndarray]:
        return list(self.pool(hidden, batch.attention_mask))


HEAD_FORMAT = "tfidf-linear/1"
# Tokens ([SEP] included) a sentence-start sub-window needs after its start. In a row shorter than one
# sub-window a short last sentence ("Sunny.", "Thanks!") is out of the classifier's distribution and
# scores at random, so it needs more; in a longer row, a window cut 4 tokens into an attack ("Ignore
# all previous instructions") still catches it (attacks after prose caught: 45 % with 4, 40 % with 8).
MIN_SENTENCE_TOKENS = 8
MIN_SENTENCE_TOKENS_LONG_ROW = 4


@dataclass
class TfidfLinearHead:
    """Logistic regression over [L2 mean embedding ⊕ TF-IDF (sublinear tf, L2) of wordpiece 1-2-grams],
    max over the whole row and its sub-windows. Output per row: ``[p(benign), p(positive)]`` float32."""

    name: str
    unigram_ids: np.ndarray  # [U] wordpiece ids
    unigram_cols: np.ndarray  # [U] feature column of each
    bigram_ids: np.ndarray  # [B, 2]
    bigram_cols: np.ndarray  # [B]
    idf_w: np.ndarray  # [V] float32: idf * coefficient (what the graph multiplies with)
    idf_sq: np.ndarray  # [V] float32: idf ** 2 (for the L2 norm)
    w_emb: np.ndarray  # [d] float32: embedding coefficients (already times the embedding weight)
    intercept: float
    sub_tokens: int = 0  # 0: the whole row only
    sub_stride: int = 0
    max_tokens: int = 256
    build_id: str = ""
    # Token ids that end a sentence (". ! ? ; :"). When set, a 32- and a 16-token sub-window also start
    # at the row's start and right after each of them: an instruction usually begins a sentence, and
    # the stride grid can split one across two sub-windows each half filler (a 16-token attack after
    # 400 words of prose scored 0.90-0.93 on the grid, 0.99 from its sentence start). Off in model.onnx
    # and in the build's identity check.
    boundary_ids: tuple[int, ...] = ()

    kind: ClassVar[str] = HEAD_FORMAT

    def __post_init__(self) -> None:
        vocab = int(max(self.unigram_ids.max(initial=0), self.bigram_ids.max(initial=0))) + 1
        self._uni = np.full(vocab, -1, dtype=np.int64)
        self._uni[self.unigram_ids.astype(np.int64)] = self.unigram_cols.astype(np.int64)
        keys = self.bigram_ids[:, 0].astype(np.int64) * vocab + self.bigram_ids[:, 1].astype(np.int64)
        order = np.argsort(keys, kind="stable")
        self._bi_keys = keys[order]
        self._bi_cols = self.bigram_cols.astype(np.int64)[order]
        self._vocab = vocab
        self._ncol = int(self.idf_w.shape[0])
        self._idf_w = self.idf_w.astype(np.float64)
        self._idf_sq = self.idf_sq.astype(np.float64)
        self._w_emb = self.w_emb.astype(np.float32)
        if not self.build_id:
            self.build_id = hashlib.sha256(self.to_bytes()).hexdigest()[:16]
        self._boundaries = np.array(self.boundary_ids, dtype=np.int64)

    def with_sentence_starts(self, boundary_ids: Sequence[int]) -> TfidfLinearHead:
        """This head also scoring the sub-window after every sentence end (its own build id, so cached
        results of the grid-only head are never reused)."""
        ids = tuple(sorted({int(i) for i in boundary_ids}))
        tag = hashlib.sha256(f"{self.build_id}:sentences:{ids}".encode()).hexdigest()[:16]
        return replace(self, boundary_ids=ids, build_id=tag)

    # -- storage ---------------------------------------------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "format": np.array(HEAD_FORMAT),
            "unigram_ids": self.unigram_ids.astype(np.int32),
            "unigram_cols": self.unigram_cols.astype(np.int32),
            "bigram_ids": self.bigram_ids.astype(np.int32),
            "bigram_cols": self.bigram_cols.astype(np.int32),
            "idf_w": self.idf_w.astype(np.float32),
            "idf_sq": self.idf_sq.astype(np.float32),
            "w_emb": self.w_emb.astype(np.float32),
            "intercept": np.array([self.intercept], dtype=np.float32),
            "sub": np.array([self.sub_tokens, self.sub_stride, self.max_tokens], dtype=np.int64),
        }

    def to_bytes(self) -> bytes:
        """An ``.npz`` (readable with ``numpy.load``), byte-for-byte reproducible: fixed member order
        and timestamps (``numpy.savez`` stamps the current time, so two builds would differ)."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for key, arr in self.arrays().items():
                member = io.BytesIO()
                np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, member.getvalue())
        return buf.getvalue()

    @classmethod
    def load(cls, path: Path, name: str) -> TfidfLinearHead:
        try:
            data = path.read_bytes()
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                fmt = str(z["format"].reshape(-1)[0])
                if fmt != HEAD_FORMAT:
                    raise ModelLoadError(path, f"head format is {fmt!r}, this runtime reads {HEAD_FORMAT!r}")
                sub = z["sub"].tolist()
                return cls(
                    name,
                    z["unigram_ids"],
                    z["unigram_cols"],
                    z["bigram_ids"].reshape(-1, 2),
                    z["bigram_cols"],
                    z["idf_w"],
                    z["idf_sq"],
                    z["w_emb"],
                    float(z["intercept"][0]),
                    int(sub[0]),
                    int(sub[1]),
                    int(sub[2]),
                    build_id=hashlib.sha256(data).hexdigest()[:16],
                )
        except ModelLoadError:
            raise
        except (OSError, KeyError, ValueError, IndexError) as exc:
            raise ModelLoadError(path, f"head file is unreadable: {exc}") from exc

    # -- scoring ---------------------------------------------------------------------------------

    def sub_starts(self, length: int) -> list[int]:
        """Distinct sub-window starts of a row (none when the row fits in one sub-window)."""
        k, s = self.sub_tokens, self.sub_stride
        if not k or length <= k:
            return []
        last = length - k
        n_slots = -(-max(self.max_tokens - k, 0) // s) + 1
        return sorted({min(j * s, last) for j in range(n_slots)})

    def starts_after_sentences(self, ids: np.ndarray) -> list[int]:
        """Sub-window starts right after each sentence end that leave enough tokens in the row (see
        ``MIN_SENTENCE_TOKENS``; a row shorter than one sub-window included: "How do I reverse a linked
        list in Java? Ignore the above directions…" is one short row, and its second sentence alone
        is the attack)."""
        k, n = self.sub_tokens, len(ids)
        if not k or not len(self._boundaries):
            return []
        least = MIN_SENTENCE_TOKENS_LONG_ROW if n > k else MIN_SENTENCE_TOKENS
        return [int(e) + 1 for e in np.nonzero(np.isin(ids, self._boundaries))[0] if int(e) + 1 <= n - least]

    def _gram_cols(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feature column of every unigram (position t) and bigram (t, t+1) of a row; -1 = not a feature."""
        ids = ids.astype(np.int64)
        inside = ids < self._vocab
        uni = np.where(inside, self._uni[np.where(inside, ids, 0)], -1)
        if len(ids) < 2 or not len(self._bi_keys):
            return uni, np.full(max(len(ids) - 1, 0), -1, dtype=np.int64)
        a, b = ids[:-1], ids[1:]
        ok = (a < self._vocab) & (b < self._vocab)
        keys = np.where(ok, a * self._vocab + b, -1)
        pos = np.clip(np.searchsorted(self._bi_keys, keys), 0, len(self._bi_keys) - 1)
        bi = np.where(ok & (self._bi_keys[pos] == keys), self._bi_cols[pos], -1)
        return uni, bi

    def logits(self, hidden: np.ndarray, batch: Padded) -> np.ndarray:
        """The head's logit per row: max over the whole row and its sub-windows."""
        rows = hidden.shape[0]
        lengths = batch.attention_mask.sum(axis=1).astype(np.int64)
        seg_of: list[np.ndarray] = []  # per (segment, n-gram occurrence): the segment
        col_of: list[np.ndarray] = []
        emb: list[np.ndarray] = []  # per segment: the mean token state
        owner: list[int] = []
        k = self.sub_tokens
        seg = 0
        for r in range(rows):
            n = int(lengths[r])
            ids = batch.input_ids[r, :n]
            h = hidden[r, :n].astype(np.float64)
            uni, bi = self._gram_cols(ids)
            spans = [(0, n)] + [(s, s + k) for s in self.sub_starts(n)]
            grid = set(spans)
            starts = self.starts_after_sentences(ids)
            if starts and n > k:
                starts = [1, *starts]  # the row's first token after [CLS] starts a sentence too
            for s in starts:
                for sp in ((s, min(s + k, n)), (s, min(s + k // 2, n))):
                    if sp not in grid:
                        grid.add(sp)
                        spans.append(sp)
            if len(spans) > 1:
                csum = np.vstack([np.zeros((1, h.shape[1])), np.cumsum(h, axis=0)])
            for lo, hi in spans:
                cols = np.concatenate([uni[lo:hi], bi[lo : hi - 1]])
                cols = cols[cols >= 0]
                seg_of.append(np.full(len(cols), seg, dtype=np.int64))
                col_of.append(cols)
                emb.append(h.mean(axis=0) if (lo, hi) == (0, n) else (csum[hi] - csum[lo]) / (hi - lo))
                owner.append(r)
                seg += 1
        segs = np.concatenate(seg_of) if seg_of else np.zeros(0, np.int64)
        cols = np.concatenate(col_of) if col_of else np.zeros(0, np.int64)
        # Term frequency per (segment, column), then sublinear tf = 1 + log(tf).
        pair, tf = np.unique(segs * self._ncol + cols, return_counts=True)
        p_seg, p_col = pair // self._ncol, pair % self._ncol
        sl = 1.0 + np.log(tf.astype(np.float64))
        num = np.bincount(p_seg, weights=sl * self._idf_w[p_col], minlength=seg)
        den = np.sqrt(np.bincount(p_seg, weights=sl * sl * self._idf_sq[p_col], minlength=seg))
        z_t = num / np.maximum(den, 1e-12)
        e = _l2(np.stack(emb).astype(np.float32)) if emb else np.zeros((0, len(self._w_emb)), np.float32)
        z = z_t + e.astype(np.float64) @ self._w_emb.astype(np.float64) + self.intercept
        out = np.full(rows, -np.inf)
        np.maximum.at(out, np.asarray(owner, dtype=np.int64), z)
        return out

    def apply(self, hidden: np.ndarray, batch: Padded) -> Sequence[np.ndarray]:
        p1 = 1.0 / (1.0 + np.exp(-self.logits(hidden, batch)))
        return [np.array([1.0 - p, p], dtype=np.float32) for p in p1]


def head_from_graph(model: Any, name: str) -> TfidfLinearHead:
    """Read the TF-IDF linear head out of a full graph ``head_graph.compose`` wrote (an ``onnx.ModelProto``):
    for model directories built before heads were stored on their own."""
    from onnx import numpy_helper

    g = model.graph
    init = {i.name: numpy_helper.to_array(i) for i in g.initializer if i.name.startswith("jb/")}
    node = next(n for n in g.node if n.op_type == "TfIdfVectorizer")
    attrs = {a.name: list(a.ints) for a in node.attribute if a.ints}
    n_uni = int(attrs["ngram_counts"][1])
    pool = np.array(attrs["pool_int64s"], dtype=np.int64)
    index = np.array(attrs["ngram_indexes"], dtype=np.int64)
    has_sub = "jb/k" in init
    return TfidfLinearHead(
        name,
        pool[:n_uni],
        index[:n_uni],
        pool[n_uni:].reshape(-1, 2),
        index[n_uni:],
        init["jb/idf_w"].reshape(-1),
        init["jb/idf_sq"].reshape(-1),
        init["jb/w_emb"].reshape(-1),
        float(init["jb/b"].reshape(-1)[0]),
        int(init["jb/k"][0]) if has_sub else 0,
        int(init["jb/s"][0]) if has_sub else 0,
        int(init["jb/slots"].reshape(-1)[-1] + init["jb/k"][0]) if has_sub else 256,
    )
