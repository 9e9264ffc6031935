"""Grading open answers with a judge model and the item's rubric.

The judge sees the question, an optional reference answer, the answer and the criteria (without
their weights, so it cannot tell a penalty from a credit), and must reply with one JSON object that
says true or false for every criterion id. Anything else is a garbage verdict: the item is recorded
as *unscored* with the reason, never as a zero.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import openai

from router.eval.calls import CallFailed, chat
from router.eval.dataset import Criterion, Item

_SYSTEM = (
    "You are a strict grader. You check an answer against a list of criteria and reply with a "
    "single JSON object and nothing else."
)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_TRUE = {"true", "yes", "met", "1", "y"}
_FALSE = {"false", "no", "not met", "unmet", "0", "n"}
RAW_KEEP = 400


@dataclass
class Verdict:
    met: dict[str, bool] | None  # None: the judge's reply could not be used
    error: str | None
    raw: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


def judge_messages(item: Item, answer: str) -> list[dict[str, str]]:
    lines = ["Question:", item.prompt.strip(), ""]
    if item.reference:
        lines += ["Reference answer (a guide; other correct wordings are fine):", item.reference.strip(), ""]
    lines += [
        "Answer to grade:",
        answer.strip() or "(empty answer)",
        "",
        "For each criterion decide whether the answer meets it (true) or not (false):",
    ]
    lines += [f"- {c.id}: {c.text}" for c in item.rubric]
    # No example verdict with values: a small judge copies the example instead of grading.
    keys = ", ".join(f'"{c.id}"' for c in item.rubric)
    lines += ["", f"Reply with one JSON object with exactly the keys {keys}, each set to true or false. No other text."]
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    if isinstance(value, dict):  # {"met": true, "reason": "..."}
        for key in ("met", "value", "verdict", "pass"):
            if key in value:
                return _as_bool(value[key])
    return None


def _candidates(reply: str) -> list[str]:
    found = [m.group(1) for m in _FENCE.finditer(reply)]
    start, end = reply.find("{"), reply.rfind("}")
    if start != -1 and end > start:
        found.append(reply[start : end + 1])
    return found


def parse_verdict(reply: str, criteria: list[Criterion]) -> tuple[dict[str, bool] | None, str | None]:
    """(criterion id -> met, None) or (None, why the reply is unusable)."""
    parsed: dict[str, Any] | None = None
    for text in _candidates(reply):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            parsed = value
            break
    if parsed is None:
        return None, "judge reply has no JSON object"
    if isinstance(parsed.get("criteria"), dict):  # tolerate one level of wrapping
        parsed = parsed["criteria"]
    met: dict[str, bool] = {}
    missing = []
    for c in criteria:
        value = _as_bool(parsed.get(c.id)) if c.id in parsed else None
        if value is None:
            missing.append(c.id)
        else:
            met[c.id] = value
    if missing:
        return None, f"judge verdict lacks a true/false for {', '.join(missing)}"
    return met, None


def verdict_schema(criteria: list[Criterion]) -> dict[str, Any]:
    """An OpenAI ``response_format`` that constrains the judge to the verdict object (vLLM and
    llama.cpp's server enforce it with a grammar, which keeps even a tiny judge parseable)."""
    schema = {
        "type": "object",
        "properties": {c.id: {"type": "boolean"} for c in criteria},
        "required": [c.id for c in criteria],
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"name": "rubric_verdict", "strict": True, "schema": schema}}


async def grade(
    client: openai.AsyncOpenAI, *, model: str, item: Item, answer: str, max_tokens: int, structured: bool = True
) -> Verdict:
    extra = {"response_format": verdict_schema(item.rubric)} if structured else None
    try:
        reply = await chat(
            client, model=model, messages=judge_messages(item, answer), max_tokens=max_tokens, temperature=0.0, extra_body=extra
        )
    except CallFailed as exc:
        return Verdict(None, f"judge call failed: {exc.reason}", "")
    met, error = parse_verdict(reply.content, item.rubric)
    return Verdict(met, error, reply.content[:RAW_KEEP], reply.cost.prompt_tokens, reply.cost.completion_tokens)
