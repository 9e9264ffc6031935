"""Defaults → decision → request plugin, merged field by field in this one place, for every algorithm."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

S = TypeVar("S", bound=BaseModel)


def merge(settings_cls: type[S], *layers: BaseModel | None) -> S:
    """Later layers win, field by field; ``None`` means "not set here" (every knob is optional)."""
    values: dict[str, Any] = {}
    for layer in layers:
        if layer is None:
            continue
        for name in settings_cls.model_fields:
            value = getattr(layer, name, None)
            if value is not None:
                values[name] = value
    return settings_cls(**values)


def settings_of(plugin: BaseModel, settings_cls: type[S]) -> S:
    """The knobs a request plugin actually set (its own extra fields left out)."""
    keep = set(settings_cls.model_fields) & set(plugin.model_fields_set)
    return settings_cls(**{k: getattr(plugin, k) for k in keep})
