"""The classifier runtime the ML signals share: models loaded once per process, by name."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from router.config.schema import Config
from router.config.signals import ML_SECTIONS

__all__ = ["ML_SECTIONS", "ClassifierRuntime", "build_runtime", "missing_models", "models_dir", "needs_models"]


class ClassifierRuntime(Protocol):
    """What signals, loopers and the process need of the classifier models (``ModelRuntime``): load a
    model directory once, read its metadata and tokenizer, run texts (or pairs) through it batched."""

    @property
    def provider(self) -> str | None: ...

    async def batcher(self, name: str) -> Any: ...

    def model(self, name: str) -> Any: ...

    async def run(self, name: str, text: str) -> Any: ...

    async def run_many(self, name: str, items: Sequence[Any]) -> list[Any]: ...

    async def close(self) -> None: ...


def models_dir(config: Config) -> Path:
    configured = config.global_.classifiers.models_dir
    return Path(configured or os.environ.get("FUSION_ROUTER_MODELS_DIR") or "models")


def missing_models(config: Config, root: Path | None = None) -> list[str]:
    """``field.path: problem`` for every model directory a required model-backed signal names that
    is not there (or lacks its files); optional signals may lack theirs."""
    from classifiers.metadata import METADATA_FILE, MODEL_FILE, TOKENIZER_FILE

    base = root or models_dir(config)
    problems = []
    for section in ML_SECTIONS:
        for j, sig in enumerate(getattr(config.routing.signals, section)):
            if sig.optional:
                continue
            for name in sig.model_names():
                path = Path(name) if Path(name).is_absolute() or "/" in name else base / name
                lacking = [f for f in (MODEL_FILE, TOKENIZER_FILE, METADATA_FILE) if not (path / f).is_file()]
                if not path.is_dir():
                    problems.append(
                        f"routing.signals.{section}[{j}].model: model directory {path} is missing (run `make models`, "
                        "set global.classifiers.models_dir, or mark the signal optional)"
                    )
                elif lacking:
                    problems.append(f"routing.signals.{section}[{j}].model: {path} lacks {', '.join(lacking)}")
    from router.looper.model_needs import model_needs

    for need in model_needs(config):
        path = Path(need.model) if Path(need.model).is_absolute() or "/" in need.model else base / need.model
        if need.required and not (path / MODEL_FILE).is_file():
            problems.append(
                f"{need.where}: model directory {path} is missing or incomplete (run `make models`, or set on_error: skip)"
            )
    return problems


def needs_models(config: Config) -> bool:
    from router.looper.model_needs import model_needs

    return any(getattr(config.routing.signals, s) for s in ML_SECTIONS) or any(True for _ in model_needs(config))


def build_runtime(config: Config) -> ClassifierRuntime | None:
    """None when no signal needs a model; otherwise a lazily-loading model runtime."""
    if not needs_models(config):
        return None
    from router.signals.models import ModelRuntime

    return ModelRuntime(models_dir(config), config.global_.classifiers)
