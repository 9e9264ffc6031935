"""Fusion: a panel answers in parallel, a judge analyses agreement and gaps, one synthesis call answers.

Adaptive Fusion adds an optional ``gate``: a named cheap model answers first, and when its confidence
clears the threshold that answer is returned (one call instead of N + 2); otherwise the full panel runs
and the gate's answer stands in for that model's panel answer instead of calling it again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import Field, model_validator

from router import headers as H
from router.config.base import Strict
from router.looper.analysis import Analysis, parse_analysis
from router.looper.base import Answer, CallResult, Looper
from router.looper.budget import answers_tokens, check_settings, resolve_limit
from router.looper.errors import StageFailure, UpstreamError
from router.looper.grounding import ANNOTATE_NOTE, WEIGHT_NOTE, GroundingSettings, GroundingTrace, Outcome, ground
from router.looper.messages import final_body, original_text, subcall_body, user_prompt
from router.looper.panel import Member, fan_out
from router.looper.scoring import METHOD_THRESHOLDS, Score, from_logprobs
from router.looper.spec import AlgorithmSpec, CheckContext
from router.looper.templates import ANALYSIS_TEMPLATE, PROMPT_VERSION, SYNTHESIS_TEMPLATE, render
from router.looper.trace import LooperTrace, TraceModel, TraceSettings
from router.looper.verify import verify
from router.openai.errors import OpenAIError
from router.openai.tokens import (
    PER_MESSAGE,
    approx_tokens,
    completion_cap,
    prompt_tokens,
)
from router.openai.types import Usage

OnError = Literal["skip", "fail"]
# self_consistency (gate only): the gate model answers `samples` times; confidence = the largest cluster's share.
ConfidenceMethod = Literal["avg_logprob", "margin", "hybrid", "self_verify", "self_consistency"]


class HybridWeights(Strict):
    logprob_weight: float = Field(default=0.5, ge=0, le=1)
    margin_weight: float = Field(default=0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> HybridWeights:
        if abs(self.logprob_weight + self.margin_weight - 1.0) > 1e-6:
            raise ValueError("logprob_weight + margin_weight must sum to 1")
        return self


class AnalysisOverride(Strict):
    """Per-panel-member knobs (the reference's ``analysis_overrides``)."""

    model: str = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_completion_tokens: int | None = Field(default=None, gt=0)


class GateSettings(Strict):
    """Adaptive Fusion: a cheap model answers first; a confident answer is returned without the panel."""

    model: str = Field(min_length=1)
    confidence_method: ConfidenceMethod = "hybrid"
    threshold: float | None = Field(default=None, gt=0, le=1)  # omitted: the method's default
    hybrid_weights: HybridWeights | None = None
    top_logprobs: int = Field(default=2, ge=1, le=20)
    # A backend that returns no logprobs: ask the gate model to rate its own answer, or run the panel.
    missing_logprobs: Literal["self_verify", "fuse"] = "self_verify"
    timeout_seconds: float | None = Field(default=None, ge=0.1, le=3600)
    samples: int = Field(default=3, ge=2, le=10)  # confidence_method self_consistency: answers to cluster

    @property
    def effective_threshold(self) -> float:
        if self.threshold is not None:
            return self.threshold
        return 0.6 if self.confidence_method == "self_consistency" else METHOD_THRESHOLDS[self.confidence_method]


class FusionSettings(Strict):
    """Every knob is optional so defaults → decision → request can be merged field by field."""

    model: str | None = None
    analysis_models: list[str] | None = None
    max_concurrent: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    include_analysis: bool | None = None
    include_intermediate_responses: bool | None = None
    on_error: OnError | None = None
    analysis_template: str | None = None
    synthesis_template: str | None = None
    judge_prompt_version: str | None = None
    # The judge starts once this many panel members answered (default: the whole panel); with fewer
    # answers in the end, Fusion goes on with what it has and the trace says so.
    min_successful_responses: int | None = Field(default=None, gt=0)
    cancel_stragglers: bool | None = None  # after min_successful_responses answered (default true)
    # The panel's budget; ``round_timeout_seconds`` is the reference's name for it.
    round_timeout_seconds: float | None = Field(default=None, ge=0.1, le=3600)
    panel_timeout_seconds: float | None = Field(default=None, ge=0.1, le=3600)
    judge_timeout_seconds: float | None = Field(default=None, ge=0.1, le=3600)
    synthesis_timeout_seconds: float | None = Field(default=None, ge=0.1, le=3600)
    analysis_overrides: list[AnalysisOverride] | None = None
    gate: GateSettings | None = None
    # Grounding-aware Fusion: score the panel's answers with the local entailment model before the judge.
    grounding: GroundingSettings | None = None
    trace: TraceSettings | None = None
    # Tokens the whole run may spend (every call); a request plugin may lower it, never raise it.
    max_total_tokens: int | None = Field(default=None, gt=0)


DEFAULTS = FusionSettings(
    include_analysis=True,
    include_intermediate_responses=True,
    on_error="skip",
    analysis_template=ANALYSIS_TEMPLATE,
    synthesis_template=SYNTHESIS_TEMPLATE,
    judge_prompt_version=PROMPT_VERSION,
    cancel_stragglers=True,
)


class FusionPlugin(FusionSettings):
    """``plugins[{id: "fusion", ...}]`` on a request: every decision knob, under OpenRouter's names,
    plus OpenRouter's own plugin fields."""

    id: Literal["fusion", "openrouter:fusion"]
    enabled: bool = True
    preset: str | None = None
    analysis_models: list[str] | None = Field(default=None, min_length=1, max_length=8)  # OpenRouter's bound
    # Accepted for OpenRouter compatibility; this gateway has no server-side web tools to bound.
    max_tool_calls: int | None = Field(default=None, ge=0)
    reasoning: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class FusionParams:
    judge: str
    panel: tuple[str, ...]
    max_concurrent: int
    max_completion_tokens: int | None
    temperature: float | None
    include_analysis: bool
    include_intermediate_responses: bool
    on_error: str
    analysis_template: str
    synthesis_template: str
    prompt_version: str
    min_successful: int
    cancel_stragglers: bool
    panel_timeout: float
    judge_timeout: float
    synthesis_timeout: float
    trace_body: bool
    trace_headers: bool
    overrides: dict[str, AnalysisOverride] = field(default_factory=dict)
    gate: GateSettings | None = None
    gate_timeout: float = 0.0
    grounding: GroundingSettings | None = None  # set only when enabled
    max_total_tokens: int | None = None

    @property
    def primary(self) -> str:
        """The model named in ``x-vsr-selected-model`` while the run starts."""
        return self.judge

    @property
    def models(self) -> list[str]:
        """Every model the run may call."""
        return [self.judge, *self.panel, *([self.gate.model] if self.gate else [])]


def _name(lookup: Any, name: str, what: str) -> str:
    spec = lookup.resolve_model(name)
    if spec is None:
        raise OpenAIError(400, f"Unknown Fusion {what} model {name!r}.", "invalid_plugin")
    return str(spec.name)


def resolve(merged: FusionSettings, ctx: Any) -> FusionParams:
    panel = [_name(ctx.lookup, m, "panel") for m in (merged.analysis_models or list(ctx.candidates))]
    if not panel:
        raise OpenAIError(400, "Fusion needs a panel: set analysis_models.", "fusion_no_panel")
    judge = _name(ctx.lookup, merged.model or ctx.fallback_model or panel[0], "judge")
    if merged.min_successful_responses is not None and merged.min_successful_responses > len(panel):
        raise OpenAIError(
            400,
            f"min_successful_responses is {merged.min_successful_responses}, but the Fusion panel has only {len(panel)} models.",
            "invalid_plugin",
            param="min_successful_responses",
        )
    trace = merged.trace or TraceSettings()
    timeout = ctx.default_timeout
    gate = merged.gate
    if gate is not None:
        gate = gate.model_copy(update={"model": _name(ctx.lookup, gate.model, "gate")})
    return FusionParams(
        judge=judge,
        panel=tuple(panel),
        max_concurrent=merged.max_concurrent or len(panel),
        max_completion_tokens=merged.max_completion_tokens,
        temperature=merged.temperature,
        include_analysis=bool(merged.include_analysis),
        include_intermediate_responses=bool(merged.include_intermediate_responses),
        on_error=merged.on_error or "skip",
        analysis_template=merged.analysis_template or ANALYSIS_TEMPLATE,
        synthesis_template=merged.synthesis_template or SYNTHESIS_TEMPLATE,
        prompt_version=merged.judge_prompt_version or PROMPT_VERSION,
        min_successful=min(merged.min_successful_responses or len(panel), len(panel)),
        cancel_stragglers=merged.cancel_stragglers is not False,
        panel_timeout=merged.round_timeout_seconds or merged.panel_timeout_seconds or timeout,
        judge_timeout=merged.judge_timeout_seconds or timeout,
        synthesis_timeout=merged.synthesis_timeout_seconds or timeout,
        trace_body=ctx.trace_body if trace.body is None else trace.body,
        trace_headers=ctx.trace_headers if trace.headers is None else trace.headers,
        overrides={_name(ctx.lookup, o.model, "analysis_overrides"): o for o in merged.analysis_overrides or []},
        gate=gate,
        gate_timeout=(gate.timeout_seconds if gate and gate.timeout_seconds else timeout),
        grounding=merged.grounding if merged.grounding is not None and merged.grounding.enabled else None,
        max_total_tokens=resolve_limit(merged, _caps(merged)),
    )


def _caps(settings: FusionSettings) -> list[tuple[str, int]]:
    caps = [("max_completion_tokens", settings.max_completion_tokens)] if settings.max_completion_tokens else []
    caps += [
        (f"analysis_overrides[{j}].max_completion_tokens", o.max_completion_tokens)
        for j, o in enumerate(settings.analysis_overrides or [])
        if o.max_completion_tokens
    ]
    return caps


def check(settings: FusionSettings, ctx: CheckContext) -> Iterator[str]:
    """Config cross-checks (paths relative to ``algorithm.fusion``)."""

    yield from ctx.unknown_model("model", settings.model, "judge")
    for j, m in enumerate(settings.analysis_models or []):
        yield from ctx.unknown_model(f"analysis_models[{j}]", m, "panel")
    for j, o in enumerate(settings.analysis_overrides or []):
        yield from ctx.unknown_model(f"analysis_overrides[{j}].model", o.model, "panel")
    if settings.gate is not None:
        yield from ctx.unknown_model("gate.model", settings.gate.model, "gate")
    if not (settings.analysis_models or ctx.model_refs):
        yield "analysis_models: a Fusion decision needs a panel (analysis_models or modelRefs)"
    yield from check_settings(settings, _caps(settings))
    panel = len(settings.analysis_models or ctx.model_refs)
    if settings.min_successful_responses is not None and panel and settings.min_successful_responses > panel:
        yield f"min_successful_responses: {settings.min_successful_responses} is more than the panel's {panel} models"


def plugin_models(plugin: FusionPlugin) -> list[tuple[str, str]]:
    names = [("model", plugin.model)] if plugin.model else []
    names += [(f"analysis_models[{j}]", m) for j, m in enumerate(plugin.analysis_models or [])]
    names += [(f"analysis_overrides[{j}].model", o.model) for j, o in enumerate(plugin.analysis_overrides or [])]
    if plugin.gate is not None:
        names.append(("gate.model", plugin.gate.model))
    return names


# --------------------------------------------------------------------------- trace


class PanelResponse(TraceModel):
    model: str
    content: str
    latency_ms: float
    usage: Usage
    from_gate: bool = False


class GateTrace(TraceModel):
    model: str
    method: str
    confidence: float | None
    threshold: float
    passed: bool
    reason: str = ""
    calls_saved: int = 0  # calls the full panel would have made and did not
    tokens_saved_estimate: int | None = None  # against the running mean of this decision's fused runs


class Quorum(TraceModel):
    wanted: int
    got: int


class FusionTrace(LooperTrace):
    judge_model: str
    analysis_models: list[str]
    prompt_version: str
    analysis_status: str
    analysis: Analysis | None = None
    analysis_raw: str | None = None
    responses: list[PanelResponse] | None = None
    cancelled_models: list[str] = Field(default_factory=list)
    quorum: Quorum | None = None
    gate: GateTrace | None = None
    grounding: GroundingTrace | None = None


# --------------------------------------------------------------------------- the algorithm


class Fusion(Looper):
    name = "fusion"

    def __init__(self, run: Any):
        super().__init__(run)
        self.params: FusionParams = run.params
        self.responses: list[CallResult] = []
        self.from_gate: str | None = None
        self.cancelled: list[str] = []
        self.analysis: Analysis | None = None
        self.analysis_raw: str | None = None
        self.analysis_status = "not_run"
        self.gate: GateTrace | None = None
        self.outcome = "fused"
        self.grounded: Outcome | None = None
        self.plan_judge = True  # the token budget may take judge and synthesis away
        self.plan_synthesis = True
        self.planned = len(self.params.panel)  # panel answers wanted (fewer when the budget cut the panel)

    async def execute(self) -> Answer:
        p, run = self.params, self.run
        base = subcall_body(run.raw, max_completion_tokens=p.max_completion_tokens, temperature=p.temperature)
        gate_answer: CallResult | None = None
        if p.gate is not None:
            gated, gate_answer = await self._gate(p.gate)
            if gated is not None:
                return gated
        original = original_text(run.raw.get("messages") or [])
        await run.say(f"fusion: panel of {len(p.panel)} started ({', '.join(p.panel)})")
        with run.ledger.stage("panel"):
            await self._panel(base, gate_answer, original)
        responses = await self._grounded_responses()
        if (
            self.plan_judge
            and run.budget.limited
            and not run.budget.fits(
                self._judge_cost(base, original, responses)
                + self._synthesis_cost(original, responses, "", (completion_cap(base) or 0) * 4 // 3)
            )
        ):
            self.plan_judge = False
            run.budget.cut("judge", f"skipped: judge and synthesis no longer fit ({run.budget.remaining} tokens left)")
        if self.plan_judge:
            await run.say(f"fusion: panel done ({len(self.responses)} answered); judge {p.judge} analysing")
            with run.ledger.stage("judge"):
                analysis_text = await self._judge(base, original, responses)
        else:
            self.analysis_status = "skipped_budget"
            analysis_text = "(no analysis: the token budget left no room for it; work from the panel answers directly)"
        if not self.plan_synthesis or (
            run.budget.limited and not run.budget.fits(self._synthesis_cost(original, responses, analysis_text))
        ):
            if self.plan_synthesis:
                run.budget.cut("synthesis", f"skipped: answering with a panel answer ({run.budget.remaining} tokens left)")
            return self._panel_answer()
        await run.say(f"fusion: analysis {self.analysis_status}; synthesis by {p.judge}")
        with run.ledger.stage("synthesis"):
            final = await self._synthesize(original, responses, analysis_text)
        finish = "tool_calls" if final.tool_calls else (final.finish_reason or "stop")
        return Answer(
            final.content or (None if final.tool_calls else ""), final.tool_calls, finish, self.outcome, streamed=run.streaming
        )

    # -- gate ------------------------------------------------------------------------------------

    async def _gate(self, gate: GateSettings) -> tuple[Answer | None, CallResult | None]:
        """The cheap model's answer, returned when confident; else (None, the answer to reuse)."""
        p, run = self.params, self.run
        tools = bool(run.raw.get("tools"))
        # With tools the gate answers like a final call (it may call them); without, exactly like a
        # panel member, so its answer can stand in for that member's.
        body = (
            final_body(run.raw, None, max_completion_tokens=p.max_completion_tokens, temperature=p.temperature)
            if tools
            else subcall_body(run.raw, max_completion_tokens=p.max_completion_tokens, temperature=p.temperature)
        )
        method = gate.confidence_method
        if method not in ("self_verify", "self_consistency"):
            body = {**body, "logprobs": True, "top_logprobs": gate.top_logprobs}
        if run.budget.limited and not run.budget.fits(run.budget.cost(body)):
            run.budget.cut("gate", f"skipped: the gate call does not fit ({run.budget.remaining} tokens left)")
            return None, None
        await run.say(f"fusion: gate {gate.model} answering first")
        try:
            with run.ledger.stage("gate"):
                if method == "self_consistency":
                    answer, score = await self._consistent_gate(gate, body)
                else:
                    answer = await run.call(gate.model, body, p.gate_timeout, stage="gate")
                    score = await self._confidence(gate, answer)
        except UpstreamError as exc:
            self.gate = GateTrace(
                model=gate.model,
                method=method,
                confidence=None,
                threshold=gate.effective_threshold,
                passed=False,
                reason=f"gate_failed:{exc.reason}",
            )
            return None, None
        threshold = gate.effective_threshold
        passed = score.value is not None and score.value >= threshold and (bool(answer.content) or bool(answer.tool_calls))
        saved = len(p.panel) + 2 - run.ledger.calls if passed else 0
        self.gate = GateTrace(
            model=gate.model,
            method=score.method,
            confidence=None if score.value is None else round(score.value, 4),
            threshold=threshold,
            passed=passed,
            reason=score.reason,
            calls_saved=max(saved, 0),
        )
        if passed:
            self.outcome = "gated"
            await run.say(f"fusion: gate {gate.model} confident ({score.value:.2f} >= {threshold:.2f}); no panel needed")
            finish = "tool_calls" if answer.tool_calls else (answer.finish_reason or "stop")
            return Answer(answer.content or (None if answer.tool_calls else ""), answer.tool_calls, finish, "gated"), answer
        conf = "n/a" if score.value is None else f"{score.value:.2f}"
        await run.say(f"fusion: gate {gate.model} not confident ({conf} < {threshold:.2f}); running the panel")
        return None, (answer if not tools and answer.content else None)

    async def _consistent_gate(self, gate: GateSettings, body: dict[str, Any]) -> tuple[CallResult, Score]:
        """``samples`` answers of the gate model, clustered by meaning: the most central answer of the
        largest cluster, with that cluster's share as the confidence (self-consistency)."""
        from router.looper.self_consistency import cluster, contradiction_veto, similarity, winner

        run = self.run
        out = await fan_out(
            run,
            [Member(gate.model, body)] * gate.samples,
            stage="gate",
            timeout=self.params.gate_timeout,
            max_concurrent=gate.samples,
            label="fusion gate",
        )
        answers = [r for _, r in out.answers if r.content.strip()]
        if not answers:
            failed = next((f for f in reversed(run.ledger.failures) if f.stage == "gate"), None)
            raise UpstreamError(failed.reason if failed else "empty", "every gate sample failed or was empty")
        texts = [a.content for a in answers]
        sim, how = await similarity(run.encoders, texts, "embedding")
        veto = (await contradiction_veto(run.encoders, texts, sim, 0.85, "nli"))[0] if how == "embedding" else None
        groups = cluster(sim, 0.85 if how == "embedding" else 1.0, veto)
        c, i = winner(groups, sim)
        return answers[i], Score(len(groups[c]) / len(answers), "self_consistency", len(answers), how)

    async def _confidence(self, gate: GateSettings, answer: CallResult) -> Score:
        weights = gate.hybrid_weights or HybridWeights()
        score = (
            from_logprobs(answer.logprobs, gate.confidence_method, weights.logprob_weight)
            if gate.confidence_method != "self_verify"
            else None
        )
        if score is not None and (score.value is not None or gate.missing_logprobs == "fuse"):
            return score
        return await verify(
            self.run, gate.model, answer.content, self.params.gate_timeout, stage="gate", why=score.reason if score else ""
        )

    # -- panel -----------------------------------------------------------------------------------

    async def _panel(self, base: dict[str, Any], reuse: CallResult | None, original: str) -> None:
        p, run = self.params, self.run
        members = []
        for name in p.panel:
            if reuse is not None and name == reuse.model and self.from_gate is None:
                self.from_gate = name  # the gate's answer is this member's answer: no second call
                continue
            o = p.overrides.get(name)
            body = (
                base
                if o is None
                else subcall_body(
                    run.raw,
                    max_completion_tokens=o.max_completion_tokens or p.max_completion_tokens,
                    temperature=o.temperature if o.temperature is not None else p.temperature,
                )
            )
            members.append(Member(name, body))
        if run.budget.limited:
            members = self._plan(base, members, reuse if self.from_gate else None, original)
            self.planned = len(members) + (1 if self.from_gate else 0)
        if not members and reuse is not None and self.from_gate:  # the budget left only the gate's answer
            self.responses = [reuse]
            return
        enough = max(0, p.min_successful - (1 if self.from_gate else 0))
        result = await fan_out(
            run,
            members,
            stage="panel",
            timeout=p.panel_timeout,
            max_concurrent=p.max_concurrent,
            enough=enough if enough < len(members) else None,
            cancel_stragglers=p.cancel_stragglers,
            on_error=p.on_error,
            label="fusion",
        )
        self.cancelled = [m.model for m in result.cancelled]
        answers = {m.model: r for m, r in result.answers}
        if reuse is not None and self.from_gate:
            answers[self.from_gate] = reuse
        self.responses = [answers[n] for n in p.panel if n in answers]  # configured order, not finishing order
        if not self.responses:
            failures = [f for f in run.ledger.failures if f.stage == "panel"]
            timeouts = all(f.reason == "timeout" for f in failures)
            raise StageFailure(
                "panel",
                504 if timeouts else 502,
                "all_panels_failed",
                "Every Fusion panel model failed: " + "; ".join(f"{f.model}: {f.reason}" for f in failures),
            )

    # -- token budget ----------------------------------------------------------------------------

    def _plan(self, base: dict[str, Any], members: list[Member], reused: CallResult | None, original: str) -> list[Member]:
        """The panel members to call under ``max_total_tokens``, and whether judge and synthesis will run:
        the largest panel (of at least two answers where the panel has two) that leaves room for judge
        and synthesis; else for synthesis alone; else as many members as fit, one answer returned."""
        budget, p = self.run.budget, self.params
        caps = [completion_cap(m.body) or 0 for m in members]
        costs = [budget.cost(m.body) for m in members]
        fixed = [reused.usage.completion_tokens or approx_tokens(reused.content)] if reused is not None else []
        cap = completion_cap(base) or 0
        orig = approx_tokens(original)
        history = prompt_tokens(final_body(self.run.raw, None, max_completion_tokens=p.max_completion_tokens))

        def judge(k: int) -> int:
            return approx_tokens(p.analysis_template) + orig + answers_tokens(fixed + caps[:k]) + PER_MESSAGE + cap

        def synthesis(k: int, judged: bool) -> int:
            analysis = cap * 4 // 3 if judged else 32
            return (
                history
                + PER_MESSAGE
                + approx_tokens(p.synthesis_template)
                + orig
                + answers_tokens(fixed + caps[:k])
                + analysis
                + cap
            )

        total = len(members) + len(fixed)
        least = max(0, min(2, total) - len(fixed))

        def most(reserve: Callable[[int], int], need: int) -> int | None:
            k = budget.largest(costs, reserve, least=max(need, 1))
            if k:
                return k
            return 0 if need == 0 and reserve(0) <= budget.remaining else None

        k = most(lambda n: judge(n) + synthesis(n, True), least)
        if k is None:
            k = most(lambda n: synthesis(n, False), least)
            if k is not None:
                self.plan_judge = False
                budget.cut("judge", "skipped: the budget leaves room for the panel and synthesis only")
        if k is None:
            k = most(lambda n: 0, 0 if fixed else 1)
            if k is None:
                raise budget.too_small("panel", min(costs) if costs else 0)
            self.plan_judge = self.plan_synthesis = False
            budget.cut("judge", "skipped: the budget leaves room for panel answers only")
            budget.cut("synthesis", "skipped: answering with a panel answer")
        if k < len(members):
            skipped = [m.model for m in members[k:]]
            budget.cut(
                "panel",
                f"called {k} of {len(members)} panel members ({', '.join(skipped)} not called; "
                f"{budget.remaining} tokens left before the panel)",
            )
        return members[:k]

    def _judge_cost(self, base: dict[str, Any], original: str, responses: str) -> int:
        prompt = render(self.params.analysis_template, original=original, responses=responses)
        return self.run.budget.cost(user_prompt(prompt, base))

    def _synthesis_cost(self, original: str, responses: str, analysis: str, analysis_tokens: int = 0) -> int:
        """The synthesis call's worst case (``analysis_tokens``: room for an analysis not written yet)."""
        p = self.params
        instructions = render(p.synthesis_template, original=original, responses=responses, analysis=analysis)
        return (
            self.run.budget.cost(final_body(self.run.raw, instructions, max_completion_tokens=p.max_completion_tokens))
            + analysis_tokens
        )

    def _panel_answer(self) -> Answer:
        """No room for synthesis: the first panel answer (configured order) is the client's answer."""
        self.outcome = "panel_answer"
        first = self.responses[0]
        finish = first.finish_reason or "stop"
        return Answer(first.content, [], finish, self.outcome)

    # -- grounding -------------------------------------------------------------------------------

    async def _grounded_responses(self) -> str:
        """The panel answers as the judge and the synthesis read them: as they are, or with their
        groundedness (``weight``, ``annotate``), or without the ones ``filter`` left out."""
        p, run = self.params, self.run
        plain = "\n\n".join(f"[{r.model}]\n{r.content}" for r in self.responses)
        if p.grounding is None:
            return plain
        with run.ledger.stage("grounding"):
            self.grounded = await ground(
                run.encoders, p.grounding, [(r.model, r.content) for r in self.responses], run.raw.get("messages") or []
            )
        g = self.grounded
        if g.trace.status == "failed":
            raise StageFailure("grounding", 502, "grounding_failed", f"Fusion grounding failed: {g.trace.reason}")
        if not g.applied:
            await run.say(f"fusion: grounding skipped ({g.trace.reason}); plain Fusion")
            return plain
        dropped = [r.model for r in self.responses if not g.keep(r.model)]
        await run.say(
            f"fusion: grounding scored {len(self.responses)} answers against the {g.trace.reference}"
            + (f"; left out {', '.join(dropped)}" if dropped else "")
        )
        kept = [r for r in self.responses if g.keep(r.model)]
        text = "\n\n".join(f"[{r.model}] {g.note(r.model)}".rstrip() + f"\n{r.content}" for r in kept)
        if p.grounding.policy in ("weight", "annotate"):
            note = WEIGHT_NOTE if p.grounding.policy == "weight" else ANNOTATE_NOTE
            text = note.format(reference=g.trace.reference) + "\n\n" + text
        return text

    # -- judge and synthesis -----------------------------------------------------------------------

    async def _judge(self, base: dict[str, Any], original: str, responses: str) -> str:
        """The analysis text synthesis gets. A failed judge is recorded and synthesis works from the
        raw panel answers (unless ``on_error: fail``)."""
        p, run = self.params, self.run
        prompt = render(p.analysis_template, original=original, responses=responses)
        try:
            result = await run.call(p.judge, {**user_prompt(prompt, base), "temperature": 0}, p.judge_timeout, stage="judge")
        except UpstreamError as exc:
            self.analysis_status = "judge_invalid_response" if exc.reason == "invalid_response" else "judge_upstream_error"
            if p.on_error == "fail":
                raise StageFailure.from_upstream("judge", self.analysis_status, exc, f"The Fusion judge {p.judge}") from None
            await run.say(f"fusion: judge failed ({exc.reason}); synthesizing from the panel answers")
            return f"(no analysis: the judge failed with {exc.reason}; work from the panel answers directly)"
        parsed = parse_analysis(result.content)
        self.analysis_status = parsed.status
        if parsed.analysis is not None:
            self.analysis = parsed.analysis
            return orjson.dumps(parsed.analysis.model_dump(), option=orjson.OPT_INDENT_2).decode()
        # Never hide a parse failure, and never drop the judge's words: synthesis still gets them.
        self.analysis_raw = parsed.raw
        return parsed.raw or "(the judge returned no analysis)"

    async def _synthesize(self, original: str, responses: str, analysis: str) -> CallResult:
        p, run = self.params, self.run
        instructions = render(p.synthesis_template, original=original, responses=responses, analysis=analysis)
        # The final call alone sees the client's tools, with the history in its native form.
        body = final_body(run.raw, instructions, max_completion_tokens=p.max_completion_tokens, temperature=p.temperature)
        try:
            return await run.call(p.judge, body, p.synthesis_timeout, stage="synthesis", stream=True)
        except UpstreamError as exc:
            raise StageFailure.from_upstream(
                "synthesis", "synthesis_failed", exc, f"The Fusion synthesis call to {p.judge}"
            ) from None

    # -- trace and headers -----------------------------------------------------------------------

    def trace(self) -> FusionTrace:
        p, ledger = self.params, self.run.ledger
        answered = [r.model for r in self.responses]
        common = LooperTrace.common(self.name, self.run.decision, ledger, self.outcome)
        common["answered_models"] = answered  # Fusion's documented meaning: the panel members that answered
        extra: dict[str, Any] = {"gate": self.gate} if self.gate is not None else {}
        if self.grounded is not None:
            extra["grounding"] = self.grounded.trace
        if self.outcome != "gated":
            extra["quorum"] = Quorum(wanted=min(p.min_successful, self.planned), got=len(answered))
        trace = FusionTrace(
            **common,
            **extra,
            judge_model=p.judge,
            analysis_models=list(p.panel),
            prompt_version=p.prompt_version,
            analysis_status=self.analysis_status,
            cancelled_models=self.cancelled,
        )
        if p.include_analysis:
            trace.analysis = self.analysis
            if self.analysis_raw is not None:
                trace.analysis_raw = self.analysis_raw
        if p.include_intermediate_responses:
            trace.responses = [
                PanelResponse(
                    model=r.model,
                    content=r.content,
                    latency_ms=round(r.latency_ms, 3),
                    usage=r.usage,
                    from_gate=r.model == self.from_gate,
                )
                for r in self.responses
            ]
        return trace

    def headers(self) -> dict[str, str]:
        ledger = self.run.ledger
        return {
            H.FUSION_PANEL: ",".join(r.model for r in self.responses),
            H.FUSION_JUDGE: self.params.judge,
            H.FUSION_FAILED: ",".join(f"{f.model}={f.reason}" for f in ledger.failures),
            H.FUSION_ITERATIONS: str(ledger.calls),
            H.FUSION_ANALYSIS: self.analysis_status,
            H.FUSION_LATENCY: ",".join(f"{k}={v:.1f}" for k, v in ledger.stage_ms.items()),
        }


def _encoder_models(settings: FusionSettings) -> list[tuple[str, bool, str]]:
    g = settings.grounding
    if g is None or not g.enabled:
        return []
    required = g.on_error == "fail"  # skip: a missing model means plain Fusion, not a failed start
    return [(g.nli_model, required, "grounding.nli_model"), (g.embedding_model, required, "grounding.embedding_model")]


def _plugin_candidates(plugin: FusionPlugin) -> list[str] | None:
    return list(plugin.analysis_models) if plugin.analysis_models else None


SPEC = AlgorithmSpec(
    name="fusion",
    summary="A panel answers in parallel, a judge analyses agreement and gaps, one synthesis call answers "
    "(optionally gated by a cheap model's confidence).",
    settings=FusionSettings,
    defaults=DEFAULTS,
    plugin=FusionPlugin,
    plugin_ids=("fusion", "openrouter:fusion"),
    default_slugs=("vllm-sr/fusion",),
    looper=Fusion,
    trace=FusionTrace,
    resolve=resolve,
    check=check,
    plugin_models=plugin_models,
    plugin_candidates=_plugin_candidates,
    encoder_models=_encoder_models,
)
