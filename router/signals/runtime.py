"""The classifier runtime the ML signals share: models loaded once per process, by name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from router.config.schema import Config

ML_SECTIONS = ("embeddings", "domains", "complexity", "jailbreak", "pii")


def models_dir(config: Config) -> Path:
    configured = config.global_.classifiers.models_dir
    return Path(configured or os.environ.get("FUSION_ROUTER_MODELS_DIR") or "models")


def needs_models(config: Config) -> bool:
    return any(getattr(config.routing.signals, s) for s in ML_SECTIONS)


def build_runtime(config: Config) -> Any:
    """None when no signal needs a model; otherwise a lazily-loading model runtime."""
    if not needs_models(config):
        return None
    from router.signals.models import ModelRuntime

    return ModelRuntime(models_dir(config), config.global_.classifiers)
