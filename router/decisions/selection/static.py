"""``static``: the first modelRef, always (the reference system's default, and this router's until now)."""

from __future__ import annotations

from router.config.base import Strict
from router.decisions.selection.spec import (
    SelectContext,
    Selection,
    SelectionSpec,
    first,
    no_check,
)


class StaticSettings(Strict):
    """No knobs: the order of ``modelRefs`` is the policy."""


def select(_settings: StaticSettings, ctx: SelectContext) -> Selection:
    return first(ctx, "static", f"first modelRef ({ctx.candidates[0].model})")


SPEC = SelectionSpec(
    name="static",
    summary="The first modelRef the request may use.",
    settings=StaticSettings,
    select=select,
    check=no_check,
)
