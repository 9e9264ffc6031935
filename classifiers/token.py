"""Token classification (NER): per-token BIO labels → character spans of the input text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import OnnxModel, softmax
from .errors import ModelLoadError


@dataclass(frozen=True)
class Span:
    label: str  # entity type without the B-/I- prefix, e.g. "EMAIL"
    start: int  # character offsets into the input text: text[start:end] == self.text
    end: int
    text: str
    score: float  # mean probability of the words' predicted tags


@dataclass(frozen=True)
class TokenResult:
    spans: list[Span]
    truncated: bool  # the text exceeded max_length (windows still cover all of it when stride > 0)


@dataclass
class _Word:
    start: int
    end: int
    tag: str
    score: float


def _split_tag(tag: str) -> tuple[str, str]:
    """``B-EMAIL`` → ("B", "EMAIL"); ``O`` → ("O", ""); a bare ``EMAIL`` (IO scheme) → ("I", "EMAIL")."""
    if tag == "O" or not tag:
        return "O", ""
    if len(tag) > 2 and tag[1] in "-_" and tag[0] in "BIESLU":
        prefix = {"E": "I", "L": "I", "S": "B", "U": "B"}.get(tag[0], tag[0])
        return prefix, tag[2:]
    return "I", tag


def decode_spans(text: str, words: list[_Word]) -> list[Span]:
    """Group tagged words into spans.

    ``I-X`` continues an ``X`` span; ``B-X`` starts a new one -- unless it touches the previous ``X``
    word with no whitespace between (``john.smith@`` + ``example`` + ``.com``): small quantised NER
    models often re-emit ``B-`` on the pieces of one e-mail address or number.
    """
    spans: list[Span] = []
    cur: list[_Word] = []
    cur_type = ""

    def close() -> None:
        nonlocal cur, cur_type
        if cur:
            s, e = cur[0].start, cur[-1].end
            spans.append(Span(cur_type, s, e, text[s:e], float(np.mean([w.score for w in cur]))))
        cur, cur_type = [], ""

    for w in words:
        prefix, typ = _split_tag(w.tag)
        if prefix == "O":
            close()
            continue
        touching = bool(cur) and w.start <= cur[-1].end
        if typ == cur_type and (prefix == "I" or touching):
            cur.append(w)
        else:
            close()
            cur, cur_type = [w], typ
    close()
    return spans


class TokenClassifier(OnnxModel):
    kind: ClassVar[str] = "token"

    def run(self, texts: Sequence[str]) -> list[TokenResult]:
        if not texts:
            return []
        # Long inputs are cut into windows (overlap = metadata "stride") so no entity goes unseen.
        enc = self.tokenizer.encode(texts, windows=self.metadata.stride > 0)
        # Per row: (best tag id, its probability) for each token.
        tagged = self._per_row(enc, self._best_tags)

        # Per text: word id → the word's span and the tag of its first sub-token (the usual "first"
        # aggregation). Windows overlap, so a word may be read twice: keep the more confident reading.
        per_text: list[dict[int, _Word]] = [{} for _ in texts]
        for row, owner, (best, best_p) in zip(enc.rows, enc.owner, tagged):
            words = per_text[owner]
            for k, (wid, (s, e), special) in enumerate(zip(row.word_ids, row.offsets, row.special_tokens_mask)):
                if special or wid is None or e <= s:
                    continue
                w = words.get(wid)
                if w is None:
                    w = words[wid] = _Word(s, e, "", -1.0)
                first_piece = s <= w.start
                w.start, w.end = min(w.start, s), max(w.end, e)
                score = float(best_p[k])
                if first_piece and score > w.score:
                    w.tag, w.score = self.labels[int(best[k])], score
        results = []
        for text, words, trunc in zip(texts, per_text, enc.truncated):
            ordered = [w for _, w in sorted(words.items()) if w.tag]
            results.append(TokenResult(decode_spans(text, ordered), trunc))
        return results

    def _best_tags(self, _: Any, out: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        if out.ndim != 3 or out.shape[2] != len(self.labels):
            raise ModelLoadError(
                self.path, f"output {self.output_name!r} has shape {out.shape}, expected [n, seq, {len(self.labels)}]"
            )
        probs = out.astype(np.float32, copy=False)
        if self.metadata.output_type != "probabilities":
            probs = softmax(probs)
        best = probs.argmax(axis=-1)
        best_p = np.take_along_axis(probs, best[..., None], axis=-1)[..., 0]
        return list(zip(best, best_p))

    def spans(self, texts: Sequence[str]) -> list[list[Span]]:
        return [r.spans for r in self.run(texts)]
