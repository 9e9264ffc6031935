"""ReMoM (multi-round Mixture of Models): rounds of parallel calls following a breadth schedule, each
round seeing the previous round's (compacted) answers, then one synthesis call — streamed live to a
streaming client, where the reference system buffers it."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from router.config.base import Strict
from router.looper.base import Answer, CallResult, Looper
from router.looper.budget import answers_tokens, check_settings, resolve_limit
from router.looper.errors import StageFailure, UpstreamError
from router.looper.messages import final_body, original_text, subcall_body
from router.looper.panel import Member, fan_out
from router.looper.spec import AlgorithmSpec, CheckContext
from router.looper.templates import render
from router.looper.trace import LooperTrace, TraceModel, TraceSettings
from router.openai.errors import OpenAIError
from router.openai.tokens import (
    PER_MESSAGE,
    approx_tokens,
    completion_cap,
    prompt_tokens,
)
from router.openai.types import Usage

ROUND_TEMPLATE = """Other models answered the same request. Their answers are below. Check them critically,
keep what is right, fix what is wrong, and write your own complete answer to the request.

{{responses}}"""

SYNTHESIS_TEMPLATE = """You write the final answer to the user's latest request. Several models worked on it over
several rounds, each round refining the previous one's answers. Their latest answers are below. Write
one correct, complete answer; do not mention the models or this process.

Original request:
{{original}}

Latest answers:
{{responses}}"""


class RemomSettings(Strict):
    """Names follow vLLM Semantic Router's ``algorithm.remom``; every knob optional for merging."""

    breadth_schedule: list[int] | None = Field(default=None, min_length=1, max_length=8)
    model_distribution: Literal["weighted", "equal", "round_robin", "first_only"] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    include_reasoning: bool | None = None
    compaction_strategy: Literal["full", "last_n_tokens"] | None = None
    compaction_tokens: int | None = Field(default=None, ge=0)
    synthesis_template: str | None = None
    synthesis_model: str | None = None
    max_concurrent: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    round_timeout_seconds: float | None = Field(default=None, ge=0.1, le=3600)
    synthesis_timeout_seconds: float | None = Field(default=None, ge=0.1, le=3600)
    min_successful_responses: int | None = Field(default=None, gt=0)
    cancel_stragglers: bool | None = None
    on_error: Literal["skip", "fail"] | None = None
    shuffle_seed: int | None = None
    include_intermediate_responses: bool | None = None
    max_responses_per_round: int | None = Field(default=None, ge=0)
    trace: TraceSettings | None = None
    # Tokens the whole run may spend (every round and the synthesis); a request plugin may lower it.
    max_total_tokens: int | None = Field(default=None, gt=0)


DEFAULTS = RemomSettings(
    breadth_schedule=[3, 2],
    model_distribution="round_robin",
    temperature=0.7,
    compaction_strategy="full",
    on_error="skip",
    include_intermediate_responses=False,
    cancel_stragglers=True,
)


class RemomPlugin(RemomSettings):
    """``plugins[{id: "remom", ...}]``: the decision's knobs for one request, plus ``models`` (candidates
    of the request's own, used when no ReMoM decision matched)."""

    id: Literal["remom"]
    enabled: bool = True
    models: list[str] | None = Field(default=None, min_length=1, max_length=8)


@dataclass(frozen=True, slots=True)
class RemomParams:
    schedule: tuple[tuple[str, ...], ...]  # per round, the model of each call
    synthesis_model: str
    temperature: float | None
    compaction: str
    compaction_tokens: int
    synthesis_template: str
    max_concurrent: int
    max_completion_tokens: int | None
    round_timeout: float
    synthesis_timeout: float
    min_successful: int | None
    cancel_stragglers: bool
    on_error: str
    shuffle_seed: int
    include_intermediate_responses: bool
    max_responses_per_round: int
    trace_body: bool
    trace_headers: bool
    max_total_tokens: int | None = None

    @property
    def primary(self) -> str:
        """The model named in ``x-vsr-selected-model`` while the run starts."""
        return self.synthesis_model

    @property
    def models(self) -> list[str]:
        """Every model the run may call."""
        return list(dict.fromkeys([m for r in self.schedule for m in r] + [self.synthesis_model]))


def distribute(models: list[str], breadth: int, how: str, weights: Mapping[str, float] | None = None) -> list[str]:
    """The model of each of ``breadth`` calls. ``round_robin`` cycles in order; ``equal`` gives each
    model a contiguous equal share (the first ones take the remainder); ``weighted`` shares by
    ``modelRefs[].weight`` (largest remainder); ``first_only`` sends every call to the first model."""
    if how == "first_only":
        return [models[0]] * breadth
    if how == "round_robin":
        return [models[i % len(models)] for i in range(breadth)]
    w = [max((weights or {}).get(m, 1.0), 0.0) if how == "weighted" else 1.0 for m in models]
    total = sum(w) or float(len(models))
    exact = [breadth * x / total for x in w]
    counts = [int(e) for e in exact]
    for i in sorted(range(len(models)), key=lambda i: (-(exact[i] - counts[i]), i))[: breadth - sum(counts)]:
        counts[i] += 1
    return [m for m, c in zip(models, counts) for _ in range(c)]


def resolve(merged: RemomSettings, ctx: Any) -> RemomParams:
    names = []
    for m in ctx.candidates:
        spec = ctx.lookup.resolve_model(m)
        if spec is None:
            raise OpenAIError(400, f"Unknown ReMoM model {m!r}.", "invalid_plugin")
        names.append(str(spec.name))
    if not names:
        raise OpenAIError(400, "ReMoM needs candidate models (modelRefs or plugins[].models).", "remom_no_candidates")
    synth = merged.synthesis_model or names[0]
    spec = ctx.lookup.resolve_model(synth)
    if spec is None:
        raise OpenAIError(400, f"Unknown ReMoM synthesis model {synth!r}.", "invalid_plugin")
    how = merged.model_distribution or "round_robin"
    schedule = tuple(tuple(distribute(names, b, how, ctx.weights)) for b in merged.breadth_schedule or [3, 2])
    trace = merged.trace or TraceSettings()
    timeout = ctx.default_timeout
    return RemomParams(
        schedule=schedule,
        synthesis_model=str(spec.name),
        temperature=merged.temperature,
        compaction=merged.compaction_strategy or "full",
        compaction_tokens=merged.compaction_tokens or 0,
        synthesis_template=merged.synthesis_template or SYNTHESIS_TEMPLATE,
        max_concurrent=merged.max_concurrent or max(len(r) for r in schedule),
        max_completion_tokens=merged.max_completion_tokens,
        round_timeout=merged.round_timeout_seconds or timeout,
        synthesis_timeout=merged.synthesis_timeout_seconds or timeout,
        min_successful=merged.min_successful_responses,
        cancel_stragglers=merged.cancel_stragglers is not False,
        on_error=merged.on_error or "skip",
        shuffle_seed=merged.shuffle_seed or 0,
        include_intermediate_responses=bool(merged.include_intermediate_responses),
        max_responses_per_round=merged.max_responses_per_round or 0,
        trace_body=ctx.trace_body if trace.body is None else trace.body,
        trace_headers=ctx.trace_headers if trace.headers is None else trace.headers,
        max_total_tokens=resolve_limit(merged, _caps(merged)),
    )


def _caps(settings: RemomSettings) -> list[tuple[str, int]]:
    return [("max_completion_tokens", settings.max_completion_tokens)] if settings.max_completion_tokens else []


def check(settings: RemomSettings, ctx: CheckContext) -> Iterator[str]:
    for j, b in enumerate(settings.breadth_schedule or []):
        if b < 1:
            yield f"breadth_schedule[{j}]: every round needs at least one call (got {b})"
    yield from ctx.unknown_model("synthesis_model", settings.synthesis_model)
    if settings.compaction_strategy == "last_n_tokens" and not settings.compaction_tokens:
        yield "compaction_tokens: last_n_tokens compaction needs compaction_tokens > 0"
    if not ctx.model_refs:
        yield "modelRefs: a ReMoM decision needs candidate models"
    yield from check_settings(settings, _caps(settings))


def plugin_models(plugin: RemomPlugin) -> list[tuple[str, str]]:
    names = [(f"models[{j}]", m) for j, m in enumerate(plugin.models or [])]
    if plugin.synthesis_model:
        names.append(("synthesis_model", plugin.synthesis_model))
    return names


def _copy(rng: random.Random | None) -> random.Random | None:
    if rng is None:
        return None
    twin = random.Random()
    twin.setstate(rng.getstate())
    return twin


def compact(text: str, strategy: str, tokens: int) -> str:
    """``full`` keeps an answer whole; ``last_n_tokens`` keeps its last ~``tokens`` tokens (about 0.75
    words per token), where a model's conclusion usually is."""
    if strategy != "last_n_tokens" or tokens <= 0:
        return text
    words = text.split()
    keep = max(1, int(tokens * 0.75))
    return text if len(words) <= keep else "… " + " ".join(words[-keep:])


# --------------------------------------------------------------------------- trace


class RoundResponse(TraceModel):
    model: str
    content: str
    latency_ms: float
    usage: Usage


class RoundTrace(TraceModel):
    round: int
    breadth: int
    models: list[str]
    answered: int
    failed: int
    cancelled: int
    latency_ms: float
    responses: list[RoundResponse] | None = None


class RemomTrace(LooperTrace):
    breadth_schedule: list[int]
    synthesis_model: str
    rounds: list[RoundTrace]


# --------------------------------------------------------------------------- the algorithm


class Remom(Looper):
    name = "remom"

    def __init__(self, run: Any):
        super().__init__(run)
        self.params: RemomParams = run.params
        self.rounds: list[RoundTrace] = []
        self.outcome = "synthesized"

    async def execute(self) -> Answer:
        p, run = self.params, self.run
        base = subcall_body(run.raw, max_completion_tokens=p.max_completion_tokens, temperature=p.temperature)
        latest: list[CallResult] = []
        rng = random.Random(p.shuffle_seed) if p.shuffle_seed else None
        synthesize = True
        for i, models in enumerate(p.schedule, start=1):
            body = base if not latest else self._with_context(base, latest, rng)
            stage = f"round{i}"
            if run.budget.limited:
                fit = self._fit_round(i, models, body, latest)
                if fit is None:  # no room for this round and a synthesis after it: synthesize from what there is
                    break
                models, synthesize = fit
            await run.say(f"remom: round {i}/{len(p.schedule)}: {len(models)} calls")
            with run.ledger.stage(stage):
                enough = min(p.min_successful, len(models)) if p.min_successful else None
                result = await fan_out(
                    run,
                    [Member(m, body) for m in models],
                    stage=stage,
                    timeout=p.round_timeout,
                    max_concurrent=p.max_concurrent,
                    enough=enough if enough and enough < len(models) else None,
                    cancel_stragglers=p.cancel_stragglers,
                    on_error=p.on_error,
                    label=f"remom round {i}",
                )
            answers = [r for _, r in result.answers]
            self.rounds.append(
                RoundTrace(
                    round=i,
                    breadth=len(models),
                    models=list(models),
                    answered=len(answers),
                    failed=len(result.failed),
                    cancelled=len(result.cancelled),
                    latency_ms=round(run.ledger.stage_ms.get(stage, 0.0), 3),
                    responses=[
                        RoundResponse(model=r.model, content=r.content, latency_ms=round(r.latency_ms, 3), usage=r.usage)
                        for r in answers
                    ]
                    if p.include_intermediate_responses
                    else None,
                )
            )
            if not answers:
                if not latest:
                    raise StageFailure(
                        stage, 502, "all_rounds_failed", f"Every call of ReMoM round {i} failed; nothing to build on."
                    )
                self.outcome = "synthesized_partial"  # a later round failed whole: synthesize from the last good one
                await run.say(f"remom: round {i} produced nothing; synthesizing from round {i - 1}")
                break
            latest = answers
            if not synthesize:
                break
        # The budget's estimate shuffles with a copy of the generator: the call shows the same order.
        if not synthesize or (
            run.budget.limited and not run.budget.fits(run.budget.cost(self._synthesis_body(latest, _copy(rng))))
        ):
            if synthesize:
                run.budget.cut("synthesis", f"skipped: answering with a round answer ({run.budget.remaining} tokens left)")
            self.outcome = "round_answer"
            first = latest[0]
            return Answer(first.content, [], first.finish_reason or "stop", self.outcome)
        return await self._synthesize(latest, rng)

    def _fit_round(
        self, i: int, models: tuple[str, ...], body: dict[str, Any], latest: list[CallResult]
    ) -> tuple[tuple[str, ...], bool] | None:
        """Under ``max_total_tokens``: the calls of round ``i`` that fit with a synthesis after them (and
        whether it will run); None to stop before this round."""
        p, budget = self.params, self.run.budget
        cost = budget.cost(body)
        cap = completion_cap(body) or 0
        history = prompt_tokens(final_body(self.run.raw, None, max_completion_tokens=p.max_completion_tokens))
        orig = approx_tokens(original_text(self.run.raw.get("messages") or []))

        def synthesis(k: int) -> int:
            return history + PER_MESSAGE + approx_tokens(p.synthesis_template) + orig + answers_tokens([cap] * k) + cap

        k = budget.largest([cost] * len(models), synthesis)
        later = ", ".join(f"round{j}" for j in range(i, len(p.schedule) + 1))
        if k == 0 and latest:
            budget.cut(
                f"round{i}",
                f"not run ({later}): a round and the synthesis need about {cost + synthesis(1)} tokens, {budget.remaining} left",
            )
            return None
        if k == 0:  # round 1 and a synthesis do not fit: as many round-1 calls as fit, one answer returned
            k = budget.largest([cost] * len(models), lambda n: 0)
            if k == 0:
                raise budget.too_small(f"round{i}", cost)
            budget.cut("synthesis", "skipped: the budget leaves room for round-1 answers only")
            if k < len(models):
                budget.cut(f"round{i}", f"{k} of {len(models)} calls")
            return models[:k], False
        if k < len(models):
            budget.cut(f"round{i}", f"{k} of {len(models)} calls ({budget.remaining} tokens left before the round)")
        return models[:k], True

    def _presented(self, answers: list[CallResult], rng: random.Random | None) -> str:
        p = self.params
        chosen = list(answers)
        if rng is not None:
            rng.shuffle(chosen)  # so no model's position in the prompt is fixed
        if p.max_responses_per_round:
            chosen = chosen[: p.max_responses_per_round]
        return "\n\n".join(
            f"[answer {k}]\n{compact(r.content, p.compaction, p.compaction_tokens)}" for k, r in enumerate(chosen, 1)
        )

    def _with_context(self, base: dict[str, Any], answers: list[CallResult], rng: random.Random | None) -> dict[str, Any]:
        context = render(ROUND_TEMPLATE, responses=self._presented(answers, rng))
        messages = list(base.get("messages") or [])
        return {**base, "messages": [*messages, {"role": "user", "content": context}]}

    def _synthesis_body(self, answers: list[CallResult], rng: random.Random | None) -> dict[str, Any]:
        p, run = self.params, self.run
        original = original_text(run.raw.get("messages") or [])
        instructions = render(p.synthesis_template, original=original, responses=self._presented(answers, rng))
        return final_body(run.raw, instructions, max_completion_tokens=p.max_completion_tokens, temperature=p.temperature)

    async def _synthesize(self, answers: list[CallResult], rng: random.Random | None) -> Answer:
        p, run = self.params, self.run
        body = self._synthesis_body(answers, rng)
        await run.say(f"remom: synthesis by {p.synthesis_model}")
        try:
            with run.ledger.stage("synthesis"):
                final = await run.call(p.synthesis_model, body, p.synthesis_timeout, stage="synthesis", stream=True)
        except UpstreamError as exc:
            raise StageFailure.from_upstream(
                "synthesis", "synthesis_failed", exc, f"The ReMoM synthesis call to {p.synthesis_model}"
            ) from None
        finish = "tool_calls" if final.tool_calls else (final.finish_reason or "stop")
        return Answer(
            final.content or (None if final.tool_calls else ""), final.tool_calls, finish, self.outcome, streamed=run.streaming
        )

    def trace(self) -> RemomTrace:
        p = self.params
        return RemomTrace(
            **LooperTrace.common(self.name, self.run.decision, self.run.ledger, self.outcome),
            breadth_schedule=[len(r) for r in p.schedule],
            synthesis_model=p.synthesis_model,
            rounds=self.rounds,
        )


SPEC = AlgorithmSpec(
    name="remom",
    summary="Rounds of parallel calls following a breadth schedule, each seeing the previous round's answers, "
    "then one synthesis call streamed live.",
    settings=RemomSettings,
    defaults=DEFAULTS,
    plugin=RemomPlugin,
    plugin_ids=("remom",),
    default_slugs=("vllm-sr/remom",),
    looper=Remom,
    trace=RemomTrace,
    resolve=resolve,
    check=check,
    plugin_models=plugin_models,
    plugin_candidates=lambda plugin: list(plugin.models) if plugin.models else None,
)
