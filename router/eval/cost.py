"""Cost of one answer: model calls and tokens, read from ``usage`` and a looper trace when present.

Fusion publishes its trace as the response's top-level ``fusion`` object with ``iterations`` (calls
made) and per-stage ``usage``; other loopers publish a similar object under their own key. The trace
is found generically - any top-level object that is not part of the OpenAI response and carries an
integer ``iterations`` - so a new looper is costed correctly without a change here. A response
without a trace counts as one call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

# Keys of an OpenAI chat completion; anything else at the top level may be a looper trace.
_OPENAI_KEYS = frozenset(
    {
        "id",
        "object",
        "created",
        "model",
        "choices",
        "usage",
        "system_fingerprint",
        "service_tier",
        "prompt_logits",
        "timings",
        "x_groq",
    }
)


class Cost(BaseModel):
    calls: int = Field(1, ge=0)
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    trace_key: str | None = Field(None, description="top-level key the looper trace was read from")
    stage_usage: dict[str, dict[str, int]] = Field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _usage_ints(usage: Any) -> dict[str, int]:
    if not isinstance(usage, Mapping):
        return {}
    return {k: _int(usage.get(k)) for k in ("prompt_tokens", "completion_tokens", "total_tokens") if k in usage}


def find_trace(body: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    for key, value in body.items():
        if key in _OPENAI_KEYS or not isinstance(value, Mapping):
            continue
        if isinstance(value.get("iterations"), int) and not isinstance(value.get("iterations"), bool):
            return key, value
    return None


def cost_of(body: Mapping[str, Any]) -> Cost:
    """Calls and tokens behind one chat completion body (a plain dict, extra fields included)."""
    usage = _usage_ints(body.get("usage"))
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    found = find_trace(body)
    if found is None:
        return Cost(calls=1, prompt_tokens=prompt, completion_tokens=completion)
    key, trace = found
    stages: dict[str, dict[str, int]] = {}
    raw_stages = trace.get("usage")
    if isinstance(raw_stages, Mapping):
        for stage, stage_usage in raw_stages.items():
            ints = _usage_ints(stage_usage)
            if ints:
                stages[str(stage)] = ints
    if stages and not usage:
        # A looper that reports usage only per stage: the answer's cost is their sum.
        prompt = sum(s.get("prompt_tokens", 0) for s in stages.values())
        completion = sum(s.get("completion_tokens", 0) for s in stages.values())
    return Cost(
        calls=_int(trace.get("iterations")), prompt_tokens=prompt, completion_tokens=completion, trace_key=key, stage_usage=stages
    )
