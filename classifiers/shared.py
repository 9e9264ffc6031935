"""One encoder pass per text, several heads: the embedding signals and the jailbreak guard read the
same MiniLM token states instead of each running its own copy of the encoder.

:class:`SharedEncoder` wraps an embedding model directory whose graph returns token states
(``last_hidden_state`` [batch, seq, d], pooling ``mean`` or ``cls``). Heads are attached to it: the
embedding model's own pooling, and the head of any model directory whose ``metadata.json`` declares
``shared_encoder`` with the sha256 of *this* encoder's ``model.onnx`` and ``tokenizer.json`` (a head
trained on other weights would score garbage, so a mismatch is refused, never guessed). ``run(texts)``
encodes each text once, in length buckets (``OnnxModel._per_row``), and returns every head's result.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .embedding import Embedding, EmbeddingModel
from .errors import ModelLoadError
from .heads import Head, PoolingHead, TfidfLinearHead
from .metadata import MODEL_FILE, TOKENIZER_FILE, ModelMetadata
from .sequence import Classification
from .session import Device
from .tokenization import CHARS_PER_TOKEN_CAP, TextTokenizer

# Tokens after which an instruction may begin (sentence-start sub-windows of the jailbreak head).
SENTENCE_ENDS = (".", "!", "?", ";", ":")
SHARED_FIELD = "shared_encoder"  # metadata.json of a head model: {encoder, sha256, head, head_format}


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so reloads don't re-read 20 MB graphs."""
    st = path.stat()
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class Features:
    """What one encoder pass over one text produced: every head's result, and whether the text was cut."""

    values: dict[str, Any]
    truncated: bool


@dataclass(frozen=True)
class HeadSpec:
    """A model directory that can run as a head over a shared encoder (its ``shared_encoder`` field)."""

    path: Path
    metadata: ModelMetadata
    encoder: str  # the encoder's model directory name, relative to the head's parent directory
    encoder_sha256: dict[str, str]
    head_file: Path

    @classmethod
    def of(cls, model_dir: Path, metadata: ModelMetadata) -> HeadSpec | None:
        spec = metadata.extra.get(SHARED_FIELD)
        if not spec:
            return None
        if not isinstance(spec, dict) or not {"encoder", "sha256", "head"} <= set(spec):
            raise ModelLoadError(model_dir / "metadata.json", f"'{SHARED_FIELD}' needs encoder, sha256 and head, got {spec!r}")
        return cls(model_dir, metadata, str(spec["encoder"]), dict(spec["sha256"]), model_dir / str(spec["head"]))

    def encoder_dir(self) -> Path:
        p = Path(self.encoder)
        return p if p.is_absolute() else self.path.parent / p

    def mismatch(self) -> str | None:
        """Why the encoder directory on disk cannot serve this head (missing, not an encoder returning
        token states, other weights), or None; read before anything is loaded."""
        d = self.encoder_dir()
        if not all((d / f).is_file() for f in (MODEL_FILE, TOKENIZER_FILE)):
            return f"its encoder {d} is missing"
        meta = ModelMetadata.load(d)
        if meta.kind != "embedding" or meta.pooling not in ("mean", "cls"):
            return f"{d} is not an encoder returning token states (kind {meta.kind}, pooling {meta.pooling})"
        for f in (MODEL_FILE, TOKENIZER_FILE):
            want, have = self.encoder_sha256.get(f), file_sha256(d / f)
            if want != have:
                return f"{self.path.name} was trained on an encoder whose {f} has sha256 {str(want)[:12]}…, {d} has {have[:12]}…"
        if self.metadata.max_length != meta.max_length:
            return f"max_length {self.metadata.max_length} != the encoder's {meta.max_length}"
        return None

    def load_head(self, name: str, sentence_starts: bool = True) -> Head:
        """The head as the router runs it. ``sentence_starts``: also score the sub-window after every
        sentence end (see ``TfidfLinearHead.boundary_ids``); False gives exactly model.onnx's function."""
        if self.metadata.kind != "sequence" or len(self.metadata.labels) != 2:
            raise ModelLoadError(self.path, "a shared-encoder head must be a 2-label sequence classifier")
        head = TfidfLinearHead.load(self.head_file, name)
        if not sentence_starts or not head.sub_tokens:
            return head
        from tokenizers import Tokenizer

        vocab = Tokenizer.from_file(str(self.encoder_dir() / TOKENIZER_FILE))
        ids = [i for i in (vocab.token_to_id(p) for p in SENTENCE_ENDS) if i is not None]
        return head.with_sentence_starts(ids)


class SharedEncoder:
    """An embedding model's session serving several heads from one pass per text."""

    def __init__(self, encoder: EmbeddingModel, name: str = "embedding"):
        if encoder.metadata.pooling not in ("mean", "cls"):
            raise ModelLoadError(encoder.path, "a shared encoder must return token states (pooling mean or cls)")
        self.encoder = encoder
        self.name = name
        self.heads: dict[str, Head] = {name: PoolingHead(name, encoder.metadata.pooling, encoder.metadata.normalize)}
        self.sha256 = {f: file_sha256(encoder.path / f) for f in (MODEL_FILE, TOKENIZER_FILE)}
        normalizer = encoder.tokenizer.tokenizer.normalizer
        self._normalize = normalizer.normalize_str if normalizer is not None else None
        self._cap = encoder.max_length * CHARS_PER_TOKEN_CAP

    @classmethod
    def load(
        cls,
        model_dir: str | os.PathLike[str],
        device: Device = "auto",
        intra_op_threads: int | None = None,
        name: str = "embedding",
    ) -> SharedEncoder:
        return cls(EmbeddingModel(model_dir, device=device, intra_op_threads=intra_op_threads), name)

    @property
    def tokenizer(self) -> TextTokenizer:
        return self.encoder.tokenizer

    @property
    def provider(self) -> str:
        return self.encoder.provider

    def namespace(self) -> str:
        return self.build_id

    @property
    def build_id(self) -> str:
        """Encoder weights + tokenizer + every head: results cached under another build never match."""
        parts = [self.sha256[MODEL_FILE][:16], self.sha256[TOKENIZER_FILE][:16]]
        parts += [f"{n}={h.build_id}" for n, h in sorted(self.heads.items())]
        return "enc:" + ",".join(parts)

    def accepts(self, spec: HeadSpec) -> str | None:
        """None when ``spec``'s head was trained on this encoder; else why not."""
        for f in (MODEL_FILE, TOKENIZER_FILE):
            want = spec.encoder_sha256.get(f)
            if want != self.sha256[f]:
                return (
                    f"{spec.path.name} was trained on an encoder whose {f} has sha256 {str(want)[:12]}…, "
                    f"{self.encoder.path} has {self.sha256[f][:12]}…"
                )
        if spec.metadata.max_length != self.encoder.max_length:
            return f"max_length {spec.metadata.max_length} != the encoder's {self.encoder.max_length}"
        return None

    def add_head(self, head: Head) -> None:
        self.heads[head.name] = head

    def normalized(self, text: str) -> str:
        """The text as the model sees it (case, accents, control characters), for cache keys: two texts
        with the same normalised form get the same token ids and so the same results."""
        if self._normalize is None or len(text) > self._cap:
            return text  # cut before normalising (see tokenization): key on the exact text
        return str(self._normalize(text))

    def run(self, texts: Sequence[str]) -> list[Features]:
        """Every head's result for every text, from one encoder pass per text."""
        if not texts:
            return []
        heads = list(self.heads.values())  # a snapshot: heads may be added while a batch runs
        enc = self.encoder.tokenizer.encode(texts)

        def post(padded: Any, out: np.ndarray) -> list[dict[str, Any]]:
            if out.ndim != 3:
                raise ModelLoadError(self.encoder.path, f"a shared encoder needs [batch, seq, dim] states, got {out.shape}")
            hidden = out.astype(np.float32, copy=False)
            per_head = [h.apply(hidden, padded) for h in heads]
            return [{h.name: res[r] for h, res in zip(heads, per_head, strict=True)} for r in range(hidden.shape[0])]

        rows = self.encoder._per_row(enc, post)  # the runtime's length buckets, shared
        return [Features(values, t) for values, t in zip(rows, enc.truncated, strict=True)]

    # -- the results as the models' own types ----------------------------------------------------

    @staticmethod
    def as_embedding(f: Features, head: str) -> Embedding:
        return Embedding(f.values[head], f.truncated)

    @staticmethod
    def as_classification(f: Features, head: str, labels: Sequence[str]) -> Classification:
        row = f.values[head]
        k = int(np.argmax(row))
        return Classification(
            probs={lab: float(p) for lab, p in zip(labels, row, strict=True)},
            label=labels[k],
            score=float(row[k]),
            truncated=f.truncated,
        )

    def embed(self, texts: Sequence[str]) -> list[Embedding]:
        return [self.as_embedding(f, self.name) for f in self.run(texts)]

    def classify(self, head: str, labels: Sequence[str], texts: Sequence[str]) -> list[Classification]:
        return [self.as_classification(f, head, labels) for f in self.run(texts)]


class HeadModel:
    """What ``ModelRuntime.model(name)`` returns for a model served as a head: its metadata and labels,
    the shared encoder's tokenizer (the windows are cut with it) and provider."""

    def __init__(self, spec: HeadSpec, shared: SharedEncoder, head: str):
        self.path = spec.path
        self.metadata = spec.metadata
        self.shared = shared
        self.spec = spec
        self.head = head

    @property
    def tokenizer(self) -> TextTokenizer:
        return self.shared.tokenizer

    @property
    def provider(self) -> str:
        return self.shared.provider

    @property
    def labels(self) -> tuple[str, ...]:
        return self.metadata.labels

    @property
    def max_length(self) -> int:
        return self.metadata.max_length

    def run(self, texts: Sequence[str]) -> list[Classification]:
        return self.shared.classify(self.head, self.labels, texts)
