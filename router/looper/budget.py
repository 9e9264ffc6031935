"""A looper run's token budget (``max_total_tokens``): before each stage the algorithm asks whether its
calls can still fit, planning with each call's worst case (estimated prompt + its completion cap) and
counting what the backends report for calls already made. When the next stage would exceed the
budget the run does less (a smaller panel, no judge, fewer rounds or tiers) and answers with what it
has; every cut is kept for the trace (``budget.budget_exhausted``, ``budget.cuts``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from router.looper.errors import StageFailure
from router.looper.ledger import Ledger
from router.looper.trace import BudgetCut, BudgetTrace
from router.openai.errors import OpenAIError
from router.openai.tokens import approx_tokens, completion_cap, prompt_tokens

# Framing an answer gets inside a judge or synthesis prompt (its "[model]" label and blank lines).
PER_ANSWER = 8


@dataclass(slots=True)
class TokenBudget:
    limit: int | None
    ledger: Ledger
    cuts: list[BudgetCut] = field(default_factory=list)
    unreported: int = 0  # estimated tokens of answered calls whose backend reported no usage

    @property
    def limited(self) -> bool:
        return self.limit is not None

    @property
    def spent(self) -> int:
        return self.ledger.usage.total_tokens + self.unreported

    @property
    def remaining(self) -> int:
        return (self.limit - self.spent) if self.limit is not None else 1 << 62

    @staticmethod
    def cost(body: dict[str, Any]) -> int:
        """A call's worst case: its estimated prompt and the completion cap it carries."""
        return prompt_tokens(body) + (completion_cap(body) or 0)

    def fits(self, tokens: int) -> bool:
        return tokens <= self.remaining

    def largest(self, costs: list[int], reserve: Callable[[int], int], least: int = 1) -> int:
        """The most of ``costs`` (in order) that fit with ``reserve(k)`` left for later stages; 0 if
        fewer than ``least`` do."""
        total = 0
        best = 0
        for k, c in enumerate(costs, start=1):
            total += c
            if total + reserve(k) <= self.remaining:
                best = k
        return best if best >= least else 0

    def note(self, body: dict[str, Any], content: str, reported: int) -> None:
        """An answered call: when its backend reported no usage, count an estimate instead of nothing."""
        if reported == 0:
            self.unreported += prompt_tokens(body) + approx_tokens(content)

    def cut(self, stage: str, detail: str) -> None:
        self.cuts.append(BudgetCut(stage=stage, detail=detail))

    def too_small(self, stage: str, tokens: int) -> StageFailure:
        self.cut(stage, f"nothing fits: one call needs about {tokens} tokens, {self.remaining} left")
        return StageFailure(
            stage,
            400,
            "token_budget_too_small",
            f"max_total_tokens ({self.limit}) cannot cover even one call of this run: about {tokens} tokens "
            f"for this conversation, {max(self.remaining, 0)} left. Raise max_total_tokens or shorten the conversation.",
        )

    @property
    def exhausted(self) -> bool:
        return bool(self.cuts)

    def trace(self) -> BudgetTrace | None:
        if self.limit is None:
            return None
        return BudgetTrace(
            max_total_tokens=self.limit, spent_tokens=self.spent, budget_exhausted=self.exhausted, cuts=list(self.cuts)
        )

    def header(self) -> str | None:
        if self.limit is None:
            return None
        return f"spent={self.spent}; max={self.limit}" + ("; exhausted" if self.exhausted else "")


def answers_tokens(caps: list[int]) -> int:
    """Room answers of these completion caps take inside a later prompt, as the estimator will count
    them (it reads text at up to 4/3 tokens a word, so an answer may count above its cap)."""
    return sum(c * 4 // 3 + PER_ANSWER for c in caps)


def check_settings(settings: BaseModel, caps: list[tuple[str, int]]) -> Iterator[str]:
    """Config checks for ``max_total_tokens`` (paths relative to the algorithm's settings): it needs the
    per-call cap it plans with, and must cover at least one call."""
    limit = getattr(settings, "max_total_tokens", None)
    if limit is None:
        return
    if getattr(settings, "max_completion_tokens", None) is None:
        yield "max_total_tokens: a token budget needs max_completion_tokens (the per-call cap the budget plans with)"
    for where, cap in caps:
        if cap > limit:
            yield f"max_total_tokens: {limit} is below one call's {where} ({cap})"


def resolve_limit(merged: BaseModel, caps: list[tuple[str, int]]) -> int | None:
    """The budget of a run whose knobs came (partly) from a request plugin: the same checks, as 400s."""
    for problem in check_settings(merged, caps):
        raise OpenAIError(400, f"Invalid looper budget: {problem}.", "invalid_plugin", param="max_total_tokens")
    return getattr(merged, "max_total_tokens", None)
