"""ONNX Runtime + ``tokenizers`` model runtime for the router's ML signals.

A model is a directory: ``model.onnx`` + ``tokenizer.json`` + ``metadata.json`` (see docs/models.md).
"""

from .base import OnnxModel
from .batcher import BatchStats, MicroBatcher
from .embedding import Embedding, EmbeddingModel
from .errors import (
    BatcherClosedError,
    ClassifierError,
    DeviceUnavailableError,
    ModelLoadError,
    OverloadedError,
)
from .metadata import ModelMetadata
from .pair import PairClassifier
from .registry import Model, load_model
from .sequence import Classification, SequenceClassifier
from .session import OnnxSession, create_session, cuda_available
from .token import Span, TokenClassifier, TokenResult

__all__ = [
    "BatchStats",
    "BatcherClosedError",
    "Classification",
    "ClassifierError",
    "DeviceUnavailableError",
    "Embedding",
    "EmbeddingModel",
    "MicroBatcher",
    "Model",
    "ModelLoadError",
    "ModelMetadata",
    "OnnxModel",
    "OnnxSession",
    "OverloadedError",
    "PairClassifier",
    "SequenceClassifier",
    "Span",
    "TokenClassifier",
    "TokenResult",
    "create_session",
    "cuda_available",
    "load_model",
]
