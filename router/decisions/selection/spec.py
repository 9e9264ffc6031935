"""What a selection algorithm declares to the registry, and what it gets and returns per request (kept
apart from the table so algorithm modules can import it without importing each other)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from router.config.base import AlgorithmBlock
from router.decisions.selection.observed import Observations
from router.looper.base import ModelFacts


@dataclass(frozen=True, slots=True)
class Candidate:
    model: str  # a models[].name
    weight: float  # modelRefs[].weight


@dataclass(frozen=True, slots=True)
class SelectContext:
    """One request's choice: the candidates still allowed (declared order, never empty) and what an
    algorithm may read about them."""

    decision: str
    candidates: tuple[Candidate, ...]
    facts: Callable[[str], ModelFacts]
    observed: Observations
    # (estimated prompt tokens, the completion cap the request asks for or None): computed only by the
    # algorithms that price a request, so the others cost nothing for it.
    estimate: Callable[[], tuple[int, int | None]]
    rng: random.Random


@dataclass(frozen=True, slots=True)
class Selection:
    """The chosen model and why, for the ``x-vsr-selection`` header, the logs and ``classify``."""

    model: str
    algorithm: str  # the selection algorithm, or ``session`` when a conversation kept its model
    reason: str  # short, ASCII, no prompt text
    scores: Mapping[str, float] = field(default_factory=dict)  # per candidate, lower or higher is better per algorithm

    def header(self, debug: bool = False) -> str:
        text = f"{self.algorithm}: {self.reason}"
        if debug and self.scores:
            text += "; scores: " + ",".join(f"{m}={v:.6g}" for m, v in self.scores.items())
        return text


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What a config cross-check needs: the decision's modelRefs as (model, weight), declared facts and
    the path of each model's entry (``models[k]``) for messages that name the field to fix."""

    model_refs: tuple[tuple[str, float], ...]
    facts: Callable[[str], ModelFacts | None]
    model_path: Callable[[str], str]
    currency: Callable[[str], str | None]


@dataclass(frozen=True)
class SelectionSpec:
    name: str
    summary: str
    settings: type[BaseModel]
    select: Callable[[Any, SelectContext], Selection]
    check: Callable[[Any, CheckContext], Iterator[str]]  # paths relative to the decision

    @cached_property
    def config_model(self) -> type[BaseModel]:
        """``{type: <name>, <name>: {...settings}}``: the decision's ``algorithm`` block."""
        fields: dict[str, Any] = {
            "type": (Literal[self.name], ...),
            self.name: (self.settings, Field(default_factory=self.settings)),
        }
        title = "".join(p.title() for p in self.name.split("_"))
        return create_model(f"{title}Algorithm", __base__=AlgorithmBlock, **fields)


def no_check(_settings: Any, _ctx: CheckContext) -> Iterator[str]:
    return iter(())


def first(ctx: SelectContext, algorithm: str, reason: str, scores: Mapping[str, float] | None = None) -> Selection:
    return Selection(ctx.candidates[0].model, algorithm, reason, dict(scores or {}))
