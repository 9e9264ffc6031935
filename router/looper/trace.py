"""The typed trace every looper publishes (the response body's ``<algorithm>`` object and the docs'
JSON schema); each algorithm extends it with its own fields."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from router.config.base import Strict
from router.looper.ledger import Ledger
from router.openai.types import Usage


class TraceModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TraceSettings(Strict):
    """Where a looper's trace goes: the body's top-level ``<algorithm>`` object and/or the
    ``x-vsr-*`` headers (unset: ``global.router.trace_in_body`` / ``trace_in_headers``)."""

    body: bool | None = None
    headers: bool | None = None


class FailedModel(TraceModel):
    model: str
    stage: str
    reason: str
    error: str


class TraceError(TraceModel):
    stage: str
    reason: str
    message: str


class BudgetCut(TraceModel):
    stage: str
    detail: str


class BudgetTrace(TraceModel):
    max_total_tokens: int
    spent_tokens: int = Field(description="tokens the backends reported (estimated for calls that reported none)")
    budget_exhausted: bool = Field(description="the budget cut the run short: see cuts")
    cuts: list[BudgetCut]


class LooperTrace(TraceModel):
    algorithm: str
    decision: str
    outcome: str = Field(description="how the run ended: fused, gated, accepted, exhausted, synthesized, or an error code")
    iterations: int = Field(description="model calls actually made")
    answered_models: list[str] = Field(description="models that answered, in completion order")
    failed_models: list[FailedModel]
    latency_ms: dict[str, float] = Field(description="per stage, and total")
    usage: dict[str, Usage] = Field(description="per stage; the response's usage is their sum")
    error: TraceError | None = None
    budget: BudgetTrace | None = Field(default=None, description="max_total_tokens: what was spent and what the budget cut")

    @staticmethod
    def common(algorithm: str, decision: str, ledger: Ledger, outcome: str) -> dict[str, Any]:
        """The fields every trace shares, read from the run's ledger."""
        return {
            "algorithm": algorithm,
            "decision": decision,
            "outcome": outcome,
            "iterations": ledger.calls,
            "answered_models": list(ledger.answered),
            "failed_models": [FailedModel(model=f.model, stage=f.stage, reason=f.reason, error=f.error) for f in ledger.failures],
            "latency_ms": {k: round(v, 3) for k, v in {**ledger.stage_ms, "total": ledger.total_ms}.items()},
            "usage": dict(ledger.stage_usage),
        }
