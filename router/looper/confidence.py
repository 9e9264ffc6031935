"""Confidence escalation: try the decision's models in escalation order (cheap or small first), score
each answer's confidence from its token logprobs (or the model's own verdict), and return the first
answer that clears the threshold; escalate otherwise. When none clears it, the last successful answer
is returned and the trace says so."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from router.config.base import Strict
from router.looper.base import Answer, CallResult, Looper
from router.looper.budget import check_settings, resolve_limit
from router.looper.errors import StageFailure, UpstreamError
from router.looper.fusion import HybridWeights
from router.looper.messages import final_body, original_text
from router.looper.scoring import METHOD_THRESHOLDS, Score, from_logprobs
from router.looper.spec import AlgorithmSpec
from router.looper.trace import LooperTrace, TraceModel, TraceSettings
from router.looper.verify import VERIFY_TOKENS, verify
from router.openai.errors import OpenAIError
from router.openai.tokens import approx_tokens, completion_cap
from router.openai.types import Usage

UNSUPPORTED = {
    "confidence_method": {"automix_entailment": "needs an external entailment verifier server"},
    "escalation_order": {"automix": "AutoMix's cost-quality POMDP ordering"},
    "token_filter": {"tool_call_args": "scoring only the tokens of tool-call arguments"},
}


class ConfidenceSettings(Strict):
    """Names follow vLLM Semantic Router's ``algorithm.confidence``; every knob optional for merging."""

    confidence_method: Literal["avg_logprob", "margin", "hybrid", "self_verify", "automix_entailment"] | None = None
    threshold: float | None = Field(default=None, gt=0, le=1)  # omitted: the method's default
    escalation_order: Literal["declared", "size", "small_to_large", "cost", "automix"] | None = None
    cost_quality_tradeoff: float | None = Field(default=None, gt=0, le=1)
    token_filter: Literal["all", "tool_call_args"] | None = None
    on_error: Literal["skip", "fail"] | None = None
    hybrid_weights: HybridWeights | None = None
    verifier_server_url: str | None = None
    verifier_timeout_seconds: float | None = Field(default=None, ge=0)
    # Ours: how many alternatives per token the margin needs, what a backend without logprobs means,
    # the per-tier budget and the sub-call knobs.
    top_logprobs: int | None = Field(default=None, ge=1, le=20)
    missing_logprobs: Literal["self_verify", "accept"] | None = None
    tier_timeout_seconds: float | None = Field(default=None, ge=0.1, le=3600)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    trace: TraceSettings | None = None
    # Tokens the whole run may spend (every tier and verification); a request plugin may lower it.
    max_total_tokens: int | None = Field(default=None, gt=0)


DEFAULTS = ConfidenceSettings(
    confidence_method="hybrid",
    escalation_order="small_to_large",
    token_filter="all",
    on_error="skip",
    top_logprobs=2,
    missing_logprobs="self_verify",
)


class ConfidencePlugin(ConfidenceSettings):
    """``plugins[{id: "confidence", ...}]``: the decision's knobs for one request, plus ``models`` (an
    escalation list of the request's own, used when no confidence decision matched)."""

    id: Literal["confidence"]
    enabled: bool = True
    models: list[str] | None = Field(default=None, min_length=2, max_length=8)


@dataclass(frozen=True, slots=True)
class ConfidenceParams:
    order: tuple[str, ...]
    method: str
    threshold: float
    logprob_weight: float
    top_logprobs: int
    missing_logprobs: str
    on_error: str
    tier_timeout: float
    max_completion_tokens: int | None
    temperature: float | None
    trace_body: bool
    trace_headers: bool
    max_total_tokens: int | None = None

    @property
    def primary(self) -> str:
        """The model named in ``x-vsr-selected-model`` while the run starts."""
        return self.order[0]

    @property
    def models(self) -> list[str]:
        """Every model the run may call."""
        return list(self.order)


def escalation_order(models: list[str], how: str, facts: Any) -> list[str]:
    """``declared`` keeps the config's order; ``size``/``small_to_large`` sort by declared parameter
    size, ``cost`` by declared price; models without the fact keep their declared order, last."""

    def size(m: str) -> float | None:
        return facts(m).param_size  # type: ignore[no-any-return]  # ``facts`` is the policy's, typed loosely here

    def price(m: str) -> float | None:
        f = facts(m)
        return None if f.input_price is None and f.output_price is None else (f.input_price or 0) + (f.output_price or 0)

    if how in ("size", "small_to_large"):
        key = size
    elif how == "cost":
        key = price
    else:
        return list(models)
    # Stable: ties keep the declared order.
    known = sorted((m for m in models if key(m) is not None), key=lambda m: key(m) or 0.0)
    return known + [m for m in models if key(m) is None]


def resolve(merged: ConfidenceSettings, ctx: Any) -> ConfidenceParams:
    names = []
    for m in ctx.candidates:
        spec = ctx.lookup.resolve_model(m)
        if spec is None:
            raise OpenAIError(400, f"Unknown confidence escalation model {m!r}.", "invalid_plugin")
        names.append(str(spec.name))
    if len(names) < 2:
        raise OpenAIError(400, "Confidence escalation needs at least two models to escalate between.", "confidence_no_candidates")
    method = merged.confidence_method or "hybrid"
    for knob, bad in UNSUPPORTED.items():
        value = getattr(merged, knob)
        if value in bad:
            raise OpenAIError(400, f"`{knob}: {value}` is not supported by this gateway ({bad[value]}).", "not_supported")
    trace = merged.trace or TraceSettings()
    weights = merged.hybrid_weights or HybridWeights()
    return ConfidenceParams(
        order=tuple(escalation_order(names, merged.escalation_order or "small_to_large", ctx.facts)),
        method=method,
        threshold=merged.threshold if merged.threshold is not None else METHOD_THRESHOLDS[method],
        logprob_weight=weights.logprob_weight,
        top_logprobs=merged.top_logprobs or 2,
        missing_logprobs=merged.missing_logprobs or "self_verify",
        on_error=merged.on_error or "skip",
        tier_timeout=merged.tier_timeout_seconds or ctx.default_timeout,
        max_completion_tokens=merged.max_completion_tokens,
        temperature=merged.temperature,
        trace_body=ctx.trace_body if trace.body is None else trace.body,
        trace_headers=ctx.trace_headers if trace.headers is None else trace.headers,
        max_total_tokens=resolve_limit(merged, _caps(merged)),
    )


def _caps(settings: ConfidenceSettings) -> list[tuple[str, int]]:
    return [("max_completion_tokens", settings.max_completion_tokens)] if settings.max_completion_tokens else []


def check(settings: ConfidenceSettings, ctx: Any) -> Iterator[str]:
    for knob, bad in UNSUPPORTED.items():
        value = getattr(settings, knob)
        if value in bad:
            yield f"{knob}: {value!r} is not supported by this gateway ({bad[value]})"
    if settings.cost_quality_tradeoff is not None:
        yield "cost_quality_tradeoff: not supported (it only steers escalation_order: automix, which this gateway lacks)"
    if settings.verifier_server_url or settings.verifier_timeout_seconds:
        yield "verifier_server_url: not supported (automix_entailment verification is not available in this gateway)"
    if len(ctx.model_refs) < 2:
        yield "modelRefs: a confidence decision needs at least two models to escalate between"
    yield from check_settings(settings, _caps(settings))


def plugin_models(plugin: ConfidencePlugin) -> list[tuple[str, str]]:
    return [(f"models[{j}]", m) for j, m in enumerate(plugin.models or [])]


# --------------------------------------------------------------------------- trace


class Attempt(TraceModel):
    model: str
    tier: int
    confidence: float | None = None
    threshold: float
    method: str
    accepted: bool = False
    reason: str  # why it was accepted or escalated past: above_threshold, below_threshold, failed:<reason>, ...
    tokens_scored: int = 0
    latency_ms: float = 0.0
    usage: Usage = Field(default_factory=Usage)


class ConfidenceTrace(LooperTrace):
    escalation_order: list[str]
    method: str
    threshold: float
    attempts: list[Attempt]
    accepted_model: str | None = None


# --------------------------------------------------------------------------- the algorithm


class Confidence(Looper):
    name = "confidence"

    def __init__(self, run: Any):
        super().__init__(run)
        self.params: ConfidenceParams = run.params
        self.attempts: list[Attempt] = []
        self.accepted: str | None = None
        self.outcome = "exhausted"

    async def execute(self) -> Answer:
        p, run = self.params, self.run
        body = final_body(run.raw, None, max_completion_tokens=p.max_completion_tokens, temperature=p.temperature)
        if p.method != "self_verify":
            body = {**body, "logprobs": True, "top_logprobs": p.top_logprobs}
        last: CallResult | None = None
        for tier, model in enumerate(p.order, start=1):
            if run.budget.limited and not run.budget.fits(cost := self._tier_cost(body)):
                if last is None:
                    raise run.budget.too_small(f"tier{tier}", cost)
                skipped = ", ".join(p.order[tier - 1 :])
                run.budget.cut(
                    f"tier{tier}",
                    f"not escalated to {skipped}: tier {tier} needs about {cost} tokens, {run.budget.remaining} left",
                )
                break
            await run.say(f"confidence: tier {tier}/{len(p.order)}: {model}")
            try:
                with run.ledger.stage(f"tier{tier}"):
                    answer = await run.call(model, body, p.tier_timeout, stage=f"tier{tier}")
                    score = await self._score(model, answer)
            except UpstreamError as exc:
                self.attempts.append(
                    Attempt(model=model, tier=tier, threshold=p.threshold, method=p.method, reason=f"failed:{exc.reason}")
                )
                if p.on_error == "fail":
                    raise StageFailure.from_upstream(
                        f"tier{tier}", "tier_failed", exc, f"Confidence tier {tier} ({model})"
                    ) from None
                await run.say(f"confidence: {model} failed ({exc.reason}); escalating")
                continue
            last = answer
            accepted = score.value is not None and score.value >= p.threshold
            if score.value is None and p.missing_logprobs == "accept":
                accepted = True  # configured: a backend without logprobs is trusted as is
            reason = (
                ("above_threshold" if score.value is not None else f"accepted_without_evidence:{score.reason}")
                if accepted
                else ("below_threshold" if score.value is not None else f"no_evidence:{score.reason}")
            )
            self.attempts.append(
                Attempt(
                    model=model,
                    tier=tier,
                    confidence=None if score.value is None else round(score.value, 4),
                    threshold=p.threshold,
                    method=score.method,
                    accepted=accepted,
                    reason=reason,
                    tokens_scored=score.tokens,
                    latency_ms=round(answer.latency_ms, 3),
                    usage=answer.usage,
                )
            )
            if accepted:
                self.accepted, self.outcome = model, "accepted"
                await run.say(f"confidence: {model} accepted")
                return self._answer(answer)
            conf = "n/a" if score.value is None else f"{score.value:.2f}"
            await run.say(f"confidence: {model} below threshold ({conf} < {p.threshold:.2f}); escalating")
        if last is None:
            raise StageFailure(
                "tiers",
                502,
                "all_tiers_failed",
                "Every confidence tier failed: " + "; ".join(f"{a.model}: {a.reason}" for a in self.attempts),
            )
        self.accepted = last.model
        return self._answer(last)

    def _tier_cost(self, body: dict[str, Any]) -> int:
        """A tier's worst case: its call, plus its self-verification when that is the method (the
        fallback verification of a backend without logprobs is checked when it is needed)."""
        cost = self.run.budget.cost(body)
        if self.params.method == "self_verify":
            cost += self._verify_cost((completion_cap(body) or 0) * 4 // 3)
        return cost

    def _verify_cost(self, answer_tokens: int) -> int:
        """A self-verification: the conversation and the answer quoted in its prompt, and the verdict."""
        return approx_tokens(original_text(self.run.raw.get("messages") or [])) + answer_tokens + VERIFY_TOKENS

    async def _score(self, model: str, answer: CallResult) -> Score:
        p = self.params
        if p.method != "self_verify":
            score = from_logprobs(answer.logprobs, p.method, p.logprob_weight)
            if score.value is not None or p.missing_logprobs == "accept":
                return score
            why = score.reason
        else:
            why = ""
        if answer.tool_calls and not answer.content:
            return Score(None, "self_verify", 0, "tool_calls_unscored")
        budget = self.run.budget
        if (
            budget.limited
            and p.method != "self_verify"
            and not budget.fits(cost := self._verify_cost(approx_tokens(answer.content)))
        ):
            budget.cut(f"verify:{model}", f"skipped: a self-verification needs about {cost} tokens, {budget.remaining} left")
            return Score(None, "self_verify", 0, f"{why}; verification_skipped_budget".strip("; "))
        return await verify(self.run, model, answer.content, p.tier_timeout, stage=f"verify:{model}", why=why)

    def _answer(self, answer: CallResult) -> Answer:
        finish = "tool_calls" if answer.tool_calls else (answer.finish_reason or "stop")
        return Answer(answer.content or (None if answer.tool_calls else ""), answer.tool_calls, finish, self.outcome)

    def trace(self) -> ConfidenceTrace:
        p = self.params
        return ConfidenceTrace(
            **LooperTrace.common(self.name, self.run.decision, self.run.ledger, self.outcome),
            escalation_order=list(p.order),
            method=p.method,
            threshold=p.threshold,
            attempts=self.attempts,
            accepted_model=self.accepted,
        )


SPEC = AlgorithmSpec(
    name="confidence",
    summary="Try the decision's models cheapest first; return the first answer whose confidence (token "
    "logprobs or self-verification) clears the threshold, else escalate.",
    settings=ConfidenceSettings,
    defaults=DEFAULTS,
    plugin=ConfidencePlugin,
    plugin_ids=("confidence",),
    default_slugs=("vllm-sr/confidence",),
    looper=Confidence,
    trace=ConfidenceTrace,
    resolve=resolve,
    check=check,
    plugin_models=plugin_models,
    plugin_candidates=lambda plugin: list(plugin.models) if plugin.models else None,
)
