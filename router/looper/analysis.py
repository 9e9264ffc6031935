"""The judge's structured analysis: accept the plain-list form and OpenRouter's richer form, parse
fenced or slightly broken JSON, and on failure keep the raw text with a typed reason."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


class Stance(BaseModel):
    model: str = ""
    stance: str = ""


class Contradiction(BaseModel):
    topic: str = ""
    stances: list[Stance] = Field(default_factory=list)


class Coverage(BaseModel):
    models: list[str] = Field(default_factory=list)
    point: str = ""


class Insight(BaseModel):
    model: str = ""
    insight: str = ""


def _as_objects(value: Any, key: str) -> Any:
    # The plain-list form gives strings; lift them into the rich form's objects.
    if isinstance(value, list):
        return [{key: v} if isinstance(v, str) else v for v in value]
    return value


class Analysis(BaseModel):
    model_config = ConfigDict(extra="allow")
    consensus: list[str] = Field(default_factory=list)
    contradictions: list[Contradiction] = Field(default_factory=list)
    partial_coverage: list[Coverage] = Field(default_factory=list)
    unique_insights: list[Insight] = Field(default_factory=list)
    blind_spots: list[str] = Field(default_factory=list)

    @field_validator("contradictions", mode="before")
    @classmethod
    def _c(cls, v: Any) -> Any:
        return _as_objects(v, "topic")

    @field_validator("partial_coverage", mode="before")
    @classmethod
    def _p(cls, v: Any) -> Any:
        return _as_objects(v, "point")

    @field_validator("unique_insights", mode="before")
    @classmethod
    def _u(cls, v: Any) -> Any:
        return _as_objects(v, "insight")

    @field_validator("consensus", "blind_spots", mode="before")
    @classmethod
    def _strings(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [x if isinstance(x, str) else orjson.dumps(x).decode() for x in v]
        return [v] if isinstance(v, str) else v


@dataclass(slots=True)
class ParsedAnalysis:
    analysis: Analysis | None
    status: str  # "ok" or judge_empty_completion / judge_not_valid_json / judge_schema_mismatch
    raw: str


def _embedded_objects(text: str) -> list[str]:
    """Every JSON object that starts at some ``{`` in prose, so braces in the judge's words don't hide it."""
    decoder = json.JSONDecoder()
    out = []
    for i, ch in enumerate(text):
        if ch != "{":
            continue
        try:
            obj, end = decoder.raw_decode(text, i)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(text[i:end])
    return out


def _candidates(text: str) -> list[str]:
    out = [m.group(1) for m in _FENCE.finditer(text)]
    out += _embedded_objects(_TRAILING_COMMA.sub(r"\1", text))
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        out.append(text[start : end + 1])
    out.append(text)
    return out


def parse_analysis(text: str) -> ParsedAnalysis:
    if not text.strip():
        return ParsedAnalysis(None, "judge_empty_completion", text)
    doc: Any = None
    for cand in _candidates(text):
        for attempt in (cand, _TRAILING_COMMA.sub(r"\1", cand)):
            try:
                doc = orjson.loads(attempt)
                break
            except orjson.JSONDecodeError:
                continue
        if doc is not None:
            break
    if not isinstance(doc, dict):
        return ParsedAnalysis(None, "judge_not_valid_json", text)
    known = {"consensus", "contradictions", "partial_coverage", "unique_insights", "blind_spots"}
    if not known & doc.keys():
        return ParsedAnalysis(None, "judge_schema_mismatch", text)
    try:
        return ParsedAnalysis(Analysis.model_validate(doc), "ok", text)
    except ValidationError:
        return ParsedAnalysis(None, "judge_schema_mismatch", text)
