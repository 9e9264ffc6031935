"""One table from ``routing.signals`` section to signal implementation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from router.config.schema import Signals
from router.signals.base import Signal
from router.signals.context import ContextSignal
from router.signals.keyword import KeywordSignal
from router.signals.language import LanguageSignal


def _ml(module: str, cls: str) -> Callable[..., Signal]:
    # ML signals import onnxruntime and load models: only when a config declares one.
    def build(spec: Any, runtime: Any) -> Signal:
        import importlib

        return getattr(importlib.import_module(f"router.signals.{module}"), cls)(spec, runtime)

    return build


SIGNAL_TYPES: dict[str, Callable[..., Signal]] = {
    "keywords": lambda spec, runtime: KeywordSignal(spec),
    "context": lambda spec, runtime: ContextSignal(spec),
    "language": lambda spec, runtime: LanguageSignal(spec),
    "embeddings": _ml("embedding", "EmbeddingSignal"),
    "domains": _ml("domain", "DomainSignal"),
    "complexity": _ml("complexity", "ComplexitySignal"),
    "jailbreak": _ml("jailbreak", "JailbreakSignal"),
    "pii": _ml("pii", "PIISignal"),
}


def build_signals(signals: Signals, runtime: Any = None) -> dict[str, Signal]:
    """Every declared signal, keyed by ``type:name``."""
    built: dict[str, Signal] = {}
    for section, factory in SIGNAL_TYPES.items():
        for spec in getattr(signals, section):
            sig = factory(spec, runtime)
            built[sig.key] = sig
    return built
