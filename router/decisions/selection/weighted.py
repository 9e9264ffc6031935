"""``weighted``: a random draw among the modelRefs, each in proportion to its ``weight`` (a weight of 0
keeps a model in the list but never draws it: drain it without editing the rest)."""

from __future__ import annotations

from collections.abc import Iterator

from router.config.base import Strict
from router.decisions.selection.spec import (
    CheckContext,
    SelectContext,
    Selection,
    SelectionSpec,
    first,
)


class WeightedSettings(Strict):
    """No knobs: ``modelRefs[].weight`` is the policy."""


def select(_settings: WeightedSettings, ctx: SelectContext) -> Selection:
    weights = {c.model: c.weight for c in ctx.candidates}
    total = sum(weights.values())
    if total <= 0:
        # Only zero-weight models are left (the others are not allowed for this request): the first of them.
        return first(ctx, "weighted", "every remaining modelRef has weight 0; first one", weights)
    point = ctx.rng.random() * total
    upto = 0.0
    chosen = ctx.candidates[-1].model
    for c in ctx.candidates:
        upto += c.weight
        if c.weight > 0 and point < upto:
            chosen = c.model
            break
    share = weights[chosen] / total
    return Selection(chosen, "weighted", f"drawn with weight {weights[chosen]:g} of {total:g} ({share:.0%})", weights)


def check(_settings: WeightedSettings, ctx: CheckContext) -> Iterator[str]:
    if not any(w > 0 for _, w in ctx.model_refs):
        yield "modelRefs: weighted selection needs at least one modelRef with weight > 0 (every weight is 0)"


SPEC = SelectionSpec(
    name="weighted",
    summary="A random draw in proportion to `modelRefs[].weight` (0 = never drawn).",
    settings=WeightedSettings,
    select=select,
    check=check,
)
