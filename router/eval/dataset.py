"""Eval items: one JSON object per line; a bad line is reported with its file and line number.

Closed items carry a gold ``answer`` scored by ``exact`` (normalised equality), ``contains`` (the
normalised gold appears as whole words), ``number`` or ``choice`` (a multiple-choice letter). Open
items use ``scorer: rubric``: criteria with positive weights add to the score, criteria with negative
weights subtract (a confident but wrong answer costs more than an honest "I don't know").
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Scorer = Literal["exact", "contains", "number", "choice", "rubric"]
LETTERS = "ABCDEFGHIJ"


class DatasetError(ValueError):
    """A dataset problem, phrased as ``file:line: what is wrong``."""


class Criterion(BaseModel):
    """One rubric line. ``pattern`` (a case-insensitive regex) lets the rubric be graded without a judge."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    text: str = Field(min_length=1)
    weight: float
    pattern: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Criterion:
        if self.weight == 0:
            raise ValueError(f"criterion {self.id!r}: weight must be non-zero (negative = penalty)")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"criterion {self.id!r}: pattern is not a valid regex: {exc}") from None
        return self


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    slice: str = "default"
    prompt: str = Field(min_length=1)
    system: str | None = None
    scorer: Scorer
    answer: str | None = None
    aliases: list[str] = Field(default_factory=list)
    choices: list[str] = Field(default_factory=list, max_length=len(LETTERS))
    rubric: list[Criterion] = Field(default_factory=list)
    reference: str | None = Field(None, description="a model answer the judge may compare against (open items)")
    source: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Item:
        if self.scorer == "rubric":
            if not any(c.weight > 0 for c in self.rubric):
                raise ValueError("scorer 'rubric' needs a rubric with at least one positive criterion")
            ids = [c.id for c in self.rubric]
            if len(set(ids)) != len(ids):
                raise ValueError("rubric criterion ids must be unique within an item")
            return self
        if not self.answer:
            raise ValueError(f"scorer {self.scorer!r} needs an 'answer'")
        if self.scorer == "choice":
            valid = LETTERS[: len(self.choices)] if self.choices else "ABCD"
            if self.answer.upper() not in valid:
                raise ValueError(f"choice answer {self.answer!r} is not one of the letters {', '.join(valid)}")
        if self.scorer == "number":
            from router.eval.scoring import parse_number

            if parse_number(self.answer) is None:
                raise ValueError(f"number answer {self.answer!r} is not a number")
        return self


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def load_items(path: str | Path) -> list[Item]:
    """Items of one JSONL file. Blank lines and lines starting with ``#`` are skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from None
    items: list[Item] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(raw, dict):
            raise DatasetError(f"{path}:{number}: expected a JSON object, got {type(raw).__name__}")
        try:
            item = Item.model_validate(raw)
        except ValidationError as exc:
            raise DatasetError(f"{path}:{number}: {_describe(exc)}") from None
        if item.id in seen:
            raise DatasetError(f"{path}:{number}: duplicate item id {item.id!r} (first on line {seen[item.id]})")
        seen[item.id] = number
        items.append(item)
    if not items:
        raise DatasetError(f"{path}: no items")
    return items


def load_datasets(paths: Iterable[str | Path], *, limit: int | None = None, slices: set[str] | None = None) -> list[Item]:
    """Items of several files; ``limit`` keeps the first N items of each slice (a quick, balanced subset)."""
    items: list[Item] = []
    origin: dict[str, Path] = {}
    for path in paths:
        for item in load_items(path):
            if item.id in origin:
                raise DatasetError(f"{path}: item id {item.id!r} is also in {origin[item.id]}")
            origin[item.id] = Path(path)
            items.append(item)
    if slices:
        items = [i for i in items if i.slice in slices]
    if limit is not None:
        taken: dict[str, int] = {}
        kept = []
        for item in items:
            if taken.get(item.slice, 0) < limit:
                taken[item.slice] = taken.get(item.slice, 0) + 1
                kept.append(item)
        items = kept
    return items
