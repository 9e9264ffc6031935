"""``load_model``: open any model directory and get the right class for its ``metadata.json`` kind."""

from __future__ import annotations

import os
from pathlib import Path

from .base import OnnxModel
from .embedding import EmbeddingModel
from .errors import ModelLoadError
from .metadata import ModelMetadata
from .pair import PairClassifier
from .sequence import SequenceClassifier
from .session import Device
from .token import TokenClassifier

Model = EmbeddingModel | SequenceClassifier | TokenClassifier | PairClassifier

MODEL_CLASSES: dict[str, type[OnnxModel]] = {
    "embedding": EmbeddingModel,
    "sequence": SequenceClassifier,
    "token": TokenClassifier,
    "pair": PairClassifier,
}


def load_model(
    path: str | os.PathLike[str],
    device: Device = "auto",
    intra_op_threads: int | None = None,
    warmup: bool = False,
) -> Model:
    """Load a model directory. Raises :class:`ModelLoadError` naming the path on any problem."""
    p = Path(path)
    if not p.is_dir():
        raise ModelLoadError(p, "model directory is missing (run `make models`?)")
    meta = ModelMetadata.load(p)
    model = MODEL_CLASSES[meta.kind](path, device=device, intra_op_threads=intra_op_threads, metadata=meta)
    if warmup:
        model.warmup()
    return model  # type: ignore[return-value]  # MODEL_CLASSES holds exactly the Model union's members
