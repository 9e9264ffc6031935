"""Tokenisation with a Hugging Face ``tokenizer.json``: truncation we can report, padding we control."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from .errors import ModelLoadError
from .windows import CutCache, plain_tokenizer

# Callers that pass whole texts (not windows) get them cut at this many characters per model token
# first: the tokenizer would otherwise materialise every token of a megabyte prompt.
CHARS_PER_TOKEN_CAP = 16
# With overflow windows (token models) a text may span this many windows before it is cut.
MAX_OVERFLOW_WINDOWS = 32


@dataclass
class Encoded:
    """Token rows for a list of texts. ``owner[r]`` is the text row ``r`` came from."""

    rows: list[Encoding]
    owner: list[int]
    truncated: list[bool]  # per input text


@dataclass
class Padded:
    """Arrays for one ONNX call, padded to the longest row of the group."""

    input_ids: np.ndarray  # [rows, seq] int64
    attention_mask: np.ndarray  # [rows, seq] int64
    token_type_ids: np.ndarray  # [rows, seq] int64


class TextTokenizer:
    def __init__(self, path: Path, max_length: int, stride: int = 0) -> None:
        if not path.is_file():
            raise ModelLoadError(path, "tokenizer.json is missing")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise ModelLoadError(path, f"tokenizer.json is unreadable: {exc}") from exc
        # Exported tokenizers often carry their own padding/truncation; ours must win.
        tok.no_padding()
        tok.enable_truncation(max_length, stride=stride)
        self.tokenizer = tok
        self.path = path
        self.max_length = max_length
        pad = tok.token_to_id("[PAD]")
        if pad is None:
            pad = tok.token_to_id("<pad>")
        self.pad_id = int(pad or 0)

    @cached_property
    def plain(self) -> Tokenizer:
        """This tokenizer without truncation or padding, for cutting texts into windows."""
        return plain_tokenizer(self.tokenizer)

    @cached_property
    def cuts(self) -> CutCache:
        """How texts were cut into windows with this tokenizer (``windows.plan_windows(cuts=...)``)."""
        return CutCache()

    def encode(self, texts: Sequence[str], windows: bool = False) -> Encoded:
        """Encode ``texts``; with ``windows`` every overflow window becomes its own row."""
        cap = self.max_length * CHARS_PER_TOKEN_CAP * (MAX_OVERFLOW_WINDOWS if windows else 1)
        cut = [len(t) > cap for t in texts]
        encs = self.tokenizer.encode_batch([t[:cap] if c else t for t, c in zip(texts, cut)])
        rows: list[Encoding] = []
        owner: list[int] = []
        truncated: list[bool] = []
        for i, enc in enumerate(encs):
            over = enc.overflowing
            truncated.append(bool(over) or cut[i])
            rows.append(enc)
            owner.append(i)
            if windows:
                for o in over:
                    rows.append(o)
                    owner.append(i)
        return Encoded(rows, owner, truncated)

    def pad(self, rows: Sequence[Encoding]) -> Padded:
        seq = max((len(e.ids) for e in rows), default=1)
        n = len(rows)
        ids = np.full((n, seq), self.pad_id, dtype=np.int64)
        mask = np.zeros((n, seq), dtype=np.int64)
        types = np.zeros((n, seq), dtype=np.int64)
        for r, e in enumerate(rows):
            k = len(e.ids)
            ids[r, :k] = e.ids
            mask[r, :k] = e.attention_mask
            types[r, :k] = e.type_ids
        return Padded(ids, mask, types)


def length_groups(lengths: Sequence[int], max_padding: float = 0.3) -> list[list[int]]:
    """Split row indices into groups of similar length, so one long prompt doesn't pad 31 short ones.

    Rows are taken shortest first; a group grows while its padded size stays within ``max_padding``
    of its real token count. Extra ONNX calls cost far less than attention over padding.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    real = 0
    for i in order:
        n = lengths[i]
        if groups and (len(groups[-1]) + 1) * n <= (real + n) * (1 + max_padding):
            groups[-1].append(i)
            real += n
        else:
            groups.append([i])
            real = n
    return groups
