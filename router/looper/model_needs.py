"""Which local encoder models (``models/<dir>``) the looper decisions of a config need, and whether
each is required: the runtime is created for them and they are loaded at start-up, where a missing
required model stops start-up with its path."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from router.looper.merge import merge
from router.looper.registry import ALGORITHMS


@dataclass(frozen=True, slots=True)
class ModelNeed:
    model: str  # a directory name under models/ (or a path)
    required: bool  # False: the decision copes without it (on_error: skip)
    where: str  # the config field that asks for it


def model_needs(config: Any) -> Iterator[ModelNeed]:
    for i, d in enumerate(config.routing.decisions):
        if not d.is_looper:
            continue
        spec = ALGORITHMS[d.algorithm.type]
        if spec.encoder_models is None:
            continue
        merged = merge(spec.settings, spec.defaults, d.algorithm_settings)
        for model, required, path in spec.encoder_models(merged):
            yield ModelNeed(model, required, f"routing.decisions[{i}].algorithm.{spec.name}.{path}")
