"""Config primitives every config model shares; imported by the algorithm modules that declare their
own settings, so the schema can be assembled from the registries without import cycles."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"

NonBlank = Annotated[str, StringConstraints(strip_whitespace=False, min_length=1, pattern=r"\S")]


class Strict(BaseModel):
    """Unknown keys are errors: a typo must never be a silently ignored setting."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class AlgorithmBlock(Strict):
    """What every ``routing.decisions[].algorithm`` block has: its ``type``. Each registered algorithm
    (model selection or looper) narrows it to a literal and adds its own settings block."""

    type: str
