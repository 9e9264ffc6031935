"""Build the configured signals from the one table of signal types (``router.config.signals``).

Implementations are imported by name when a config declares a signal of their type, so a config
without model-backed signals never imports onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from router.config.signals import SIGNAL_TYPES, SignalType
from router.signals.base import Signal

if TYPE_CHECKING:
    from router.signals.runtime import ClassifierRuntime


def implementation(t: SignalType) -> type[Signal]:
    module, cls = t.implementation.split(":")
    found: type[Signal] = getattr(importlib.import_module(module), cls)
    return found


def build_signals(signals: Any, runtime: ClassifierRuntime | None = None) -> dict[str, Signal]:
    """Every declared signal, keyed by ``type:name``."""
    built: dict[str, Signal] = {}
    for t in SIGNAL_TYPES:
        specs = getattr(signals, t.section)
        if not specs:
            continue
        cls = implementation(t)
        for spec in specs:
            sig = cls(spec, runtime) if t.model_backed else cls(spec)  # type: ignore[call-arg]  # the row says which constructor a type has
            built[sig.key] = sig
    return built
