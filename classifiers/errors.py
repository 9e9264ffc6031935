"""Exceptions the runtime raises; callers (the router's signals) match on these types."""

from __future__ import annotations


class ClassifierError(Exception):
    """Base class for every error raised by ``classifiers``."""


class ModelLoadError(ClassifierError):
    """A model directory could not be loaded; the message always names the offending path."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot load model from {self.path}: {reason}")


class DeviceUnavailableError(ModelLoadError):
    """``device="cuda"`` was requested but no CUDA session could start (no silent CPU fallback)."""


class OverloadedError(ClassifierError):
    """The micro-batcher's queue is full; shed load instead of queueing without bound."""


class BatcherClosedError(ClassifierError):
    """A request was submitted to a micro-batcher that is not running."""
