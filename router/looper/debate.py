"""Debate (multi-agent debate, Du et al. lineage): the panel answers, then up to ``max_rounds`` rounds in
which every member reads the others' latest answers and revises its own; the rounds stop early once the
answers converge (every pair's embedding cosine at or above ``convergence_threshold``, or — with
``convergence: entailment`` — no pair contradicting and every pair entailing one way); then one
synthesis call, streamed live.

A member whose revision fails keeps its previous answer (the trace says so); a first round with no
answer at all is ``502 all_panels_failed``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from router.config.base import Strict
from router.looper.base import Answer, CallResult, Looper
from router.looper.errors import StageFailure, UpstreamError
from router.looper.messages import final_body, original_text, subcall_body
from router.looper.panel import Member, fan_out
from router.looper.spec import AlgorithmSpec, CheckContext
from router.looper.templates import render
from router.looper.trace import LooperTrace, TraceModel, TraceSettings
from router.openai.errors import OpenAIError
from router.openai.types import Usage

REVISION_TEMPLATE = """Other models answered the same request. Their latest answers are below. Point out to yourself
what in them is wrong or missing, reconsider your own answer, and reply with your complete, revised
answer to the request (not a critique).

{{responses}}"""

SYNTHESIS_TEMPLATE = """You write the final answer to the user's latest request. Several models debated it: each
answered, read the others' answers and revised its own. Their final answers are below. Write one
correct, complete answer; where they still disagree, reason about which is right. Do not mention the
models or the debate.

Original request:
{{original}}

Final answers:
{{responses}}"""


class DebateSettings(Strict):
    models: list[str] | None = Field(default=None, min_length=1, max_length=8)  # default: the decision's modelRefs
    max_rounds: int | None = Field(default=None, ge=0, le=6)  # revision rounds after the first answers
    convergence: Literal["embedding", "entailment", "none"] | None = None
    convergence_threshold: float | None = Field(default=None, gt=0, le=1)
    synthesis_model: str | None = None  # default: the first model
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_concurrent: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    round_timeout_seconds: float | None = Field(default=None, ge=0.1, le=3600)
    synthesis_timeout_seconds: float | None = Field(default=None, ge=0.1, le=3600)
    min_successful_responses: int | None = Field(default=None, gt=0)
    cancel_stragglers: bool | None = None
    on_error: Literal["skip", "fail"] | None = None
    revision_template: str | None = None
    synthesis_template: str | None = None
    include_intermediate_responses: bool | None = None
    embedding_model: str | None = None
    nli_model: str | None = None
    trace: TraceSettings | None = None


DEFAULTS = DebateSettings(
    max_rounds=2,
    convergence="embedding",
    convergence_threshold=0.9,
    on_error="skip",
    include_intermediate_responses=False,
    cancel_stragglers=True,
    embedding_model="embedding",
    nli_model="nli",
)


class DebatePlugin(DebateSettings):
    id: Literal["debate"]
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class DebateParams:
    panel: tuple[str, ...]
    max_rounds: int
    convergence: str
    threshold: float
    synthesis_model: str
    temperature: float | None
    max_concurrent: int
    max_completion_tokens: int | None
    round_timeout: float
    synthesis_timeout: float
    min_successful: int | None
    cancel_stragglers: bool
    on_error: str
    revision_template: str
    synthesis_template: str
    include_intermediate_responses: bool
    embedding_model: str
    nli_model: str
    trace_body: bool
    trace_headers: bool
    max_total_tokens: int | None = None  # no token budget for this algorithm yet

    @property
    def primary(self) -> str:
        return self.synthesis_model

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys([*self.panel, self.synthesis_model]))


def resolve(merged: DebateSettings, ctx: Any) -> DebateParams:
    names = []
    for m in merged.models or list(ctx.candidates):
        spec = ctx.lookup.resolve_model(m)
        if spec is None:
            raise OpenAIError(400, f"Unknown debate model {m!r}.", "invalid_plugin")
        names.append(str(spec.name))
    if not names:
        raise OpenAIError(400, "debate needs models (modelRefs or plugins[].models).", "debate_no_models")
    synth = ctx.lookup.resolve_model(merged.synthesis_model or ctx.fallback_model or names[0])
    if synth is None:
        raise OpenAIError(400, f"Unknown debate synthesis model {merged.synthesis_model!r}.", "invalid_plugin")
    trace = merged.trace or TraceSettings()
    timeout = ctx.default_timeout
    return DebateParams(
        panel=tuple(names),
        max_rounds=2 if merged.max_rounds is None else merged.max_rounds,
        convergence=merged.convergence or "embedding",
        threshold=merged.convergence_threshold or 0.9,
        synthesis_model=str(synth.name),
        temperature=merged.temperature,
        max_concurrent=merged.max_concurrent or len(names),
        max_completion_tokens=merged.max_completion_tokens,
        round_timeout=merged.round_timeout_seconds or timeout,
        synthesis_timeout=merged.synthesis_timeout_seconds or timeout,
        min_successful=merged.min_successful_responses,
        cancel_stragglers=merged.cancel_stragglers is not False,
        on_error=merged.on_error or "skip",
        revision_template=merged.revision_template or REVISION_TEMPLATE,
        synthesis_template=merged.synthesis_template or SYNTHESIS_TEMPLATE,
        include_intermediate_responses=bool(merged.include_intermediate_responses),
        embedding_model=merged.embedding_model or "embedding",
        nli_model=merged.nli_model or "nli",
        trace_body=ctx.trace_body if trace.body is None else trace.body,
        trace_headers=ctx.trace_headers if trace.headers is None else trace.headers,
    )


def check(settings: DebateSettings, ctx: CheckContext) -> Iterator[str]:
    for j, m in enumerate(settings.models or []):
        yield from ctx.unknown_model(f"models[{j}]", m)
    yield from ctx.unknown_model("synthesis_model", settings.synthesis_model)
    panel = len(settings.models or ctx.model_refs)
    if not panel:
        yield "models: a debate decision needs models (models or modelRefs)"
    if settings.min_successful_responses is not None and panel and settings.min_successful_responses > panel:
        yield f"min_successful_responses: {settings.min_successful_responses} is more than the panel's {panel} models"


def plugin_models(plugin: DebatePlugin) -> list[tuple[str, str]]:
    names = [(f"models[{j}]", m) for j, m in enumerate(plugin.models or [])]
    if plugin.synthesis_model:
        names.append(("synthesis_model", plugin.synthesis_model))
    return names


def encoder_models(settings: DebateSettings) -> list[tuple[str, bool, str]]:
    """Optional: without them the rounds run to ``max_rounds`` (no early stop)."""
    if settings.convergence == "none":
        return []
    if settings.convergence == "entailment":
        return [(settings.nli_model or "nli", False, "nli_model")]
    return [(settings.embedding_model or "embedding", False, "embedding_model")]


# --------------------------------------------------------------------------- trace


class DebateAnswer(TraceModel):
    model: str
    content: str | None = None
    latency_ms: float | None = None
    usage: Usage | None = None
    kept_previous: bool = False  # this round's revision failed; the member's last answer stands


class DebateRound(TraceModel):
    round: int  # 1: the first answers; 2..: revisions
    answered: int
    failed: int
    agreement: float | None = None  # min pairwise cosine (embedding) or share of agreeing pairs (entailment)
    converged: bool = False
    answers: list[DebateAnswer] | None = None


class DebateTrace(LooperTrace):
    models: list[str]
    synthesis_model: str
    max_rounds: int
    convergence: str
    convergence_threshold: float
    stop_reason: str = ""  # converged | max_rounds | single_answer | convergence_unavailable: ...
    rounds: list[DebateRound] = Field(default_factory=list)


# --------------------------------------------------------------------------- the algorithm


class Debate(Looper):
    name = "debate"

    def __init__(self, run: Any):
        super().__init__(run)
        self.params: DebateParams = run.params
        self.rounds: list[DebateRound] = []
        self.stop_reason = ""
        self.outcome = "synthesized"

    async def execute(self) -> Answer:
        p, run = self.params, self.run
        base = subcall_body(run.raw, max_completion_tokens=p.max_completion_tokens, temperature=p.temperature)
        latest: dict[str, CallResult] = {}
        for r in range(1, p.max_rounds + 2):
            members = [Member(m, base if r == 1 else self._revision(base, m, latest)) for m in p.panel if r == 1 or m in latest]
            await run.say(f"debate: round {r}: {len(members)} {'answers' if r == 1 else 'revisions'}")
            with run.ledger.stage(f"round{r}"):
                enough = p.min_successful if p.min_successful and p.min_successful < len(members) else None
                result = await fan_out(
                    run,
                    members,
                    stage=f"round{r}",
                    timeout=p.round_timeout,
                    max_concurrent=p.max_concurrent,
                    enough=enough,
                    cancel_stragglers=p.cancel_stragglers,
                    on_error=p.on_error,
                    label="debate",
                )
            got = {m.model: res for m, res in result.answers if res.content.strip()}
            if r == 1 and not got:
                failures = [f for f in run.ledger.failures if f.stage == "round1"]
                timeouts = bool(failures) and all(f.reason == "timeout" for f in failures)
                raise StageFailure(
                    "round1",
                    504 if timeouts else 502,
                    "all_panels_failed",
                    "Every debate model failed: " + "; ".join(f"{f.model}: {f.reason}" for f in failures),
                )
            kept = [m for m in latest if m not in got]
            latest = {**latest, **got}
            rnd = DebateRound(round=r, answered=len(got), failed=len(members) - len(got))
            if p.include_intermediate_responses:
                rnd.answers = [
                    DebateAnswer(
                        model=m,
                        content=latest[m].content,
                        latency_ms=round(latest[m].latency_ms, 3) if m in got else None,
                        usage=latest[m].usage if m in got else None,
                        kept_previous=m in kept,
                    )
                    for m in p.panel
                    if m in latest
                ]
            self.rounds.append(rnd)
            if len(latest) < 2:
                self.stop_reason = "single_answer"
                break
            # Checked after the last round too: the trace then says how far apart the final answers are.
            if await self._converged(rnd, [latest[m].content for m in p.panel if m in latest]):
                self.stop_reason = "converged"
                await run.say(f"debate: answers converged after round {r}")
                break
            if r == p.max_rounds + 1:
                self.stop_reason = self.stop_reason or "max_rounds"
                break
        return await self._synthesize([latest[m] for m in p.panel if m in latest])

    def _revision(self, base: dict[str, Any], model: str, latest: dict[str, CallResult]) -> dict[str, Any]:
        others = "\n\n".join(f"[{m}]\n{r.content}" for m, r in latest.items() if m != model)
        messages = list(base.get("messages") or [])
        return {
            **base,
            "messages": [
                *messages,
                {"role": "assistant", "content": latest[model].content},
                {"role": "user", "content": render(self.params.revision_template, responses=others)},
            ],
        }

    async def _converged(self, rnd: DebateRound, texts: list[str]) -> bool:
        p, enc = self.params, self.run.encoders
        if p.convergence == "none":
            return False
        try:
            if enc is None:
                raise RuntimeError("no classifier runtime")
            if p.convergence == "embedding":
                vecs = await enc.embed(p.embedding_model, texts)
                sim = vecs @ vecs.T
                agreement = float(min(sim[i, j] for i in range(len(texts)) for j in range(len(texts)) if i != j))
                rnd.agreement = round(agreement, 4)
                rnd.converged = agreement >= p.threshold
                return rnd.converged
            pairs = [(texts[i], texts[j]) for i in range(len(texts)) for j in range(len(texts)) if i != j]
            verdicts = await enc.entail(p.nli_model, pairs)
            n = len(texts)
            ok = 0
            total = 0
            for i in range(n):
                for j in range(i + 1, n):
                    a, b = verdicts[i * (n - 1) + (j - 1)], verdicts[j * (n - 1) + i]
                    total += 1
                    if "contradiction" not in (a.label, b.label) and "entailment" in (a.label, b.label):
                        ok += 1
            rnd.agreement = round(ok / total, 4) if total else 1.0
            rnd.converged = total > 0 and ok == total
            return rnd.converged
        except Exception as exc:  # noqa: BLE001 - no early stop then: the rounds run to max_rounds
            self.stop_reason = f"convergence_unavailable: {type(exc).__name__}: {exc}"
            return False

    async def _synthesize(self, answers: list[CallResult]) -> Answer:
        p, run = self.params, self.run
        responses = "\n\n".join(f"[{a.model}]\n{a.content}" for a in answers)
        original = original_text(run.raw.get("messages") or [])
        instructions = render(p.synthesis_template, original=original, responses=responses)
        body = final_body(run.raw, instructions, max_completion_tokens=p.max_completion_tokens, temperature=p.temperature)
        await run.say(f"debate: synthesis by {p.synthesis_model}")
        try:
            with run.ledger.stage("synthesis"):
                final = await run.call(p.synthesis_model, body, p.synthesis_timeout, stage="synthesis", stream=True)
        except UpstreamError as exc:
            raise StageFailure.from_upstream(
                "synthesis", "synthesis_failed", exc, f"The debate synthesis call to {p.synthesis_model}"
            ) from None
        finish = "tool_calls" if final.tool_calls else (final.finish_reason or "stop")
        return Answer(
            final.content or (None if final.tool_calls else ""), final.tool_calls, finish, self.outcome, streamed=run.streaming
        )

    def trace(self) -> DebateTrace:
        p = self.params
        return DebateTrace(
            **LooperTrace.common(self.name, self.run.decision, self.run.ledger, self.outcome),
            models=list(p.panel),
            synthesis_model=p.synthesis_model,
            max_rounds=p.max_rounds,
            convergence=p.convergence,
            convergence_threshold=p.threshold,
            stop_reason=self.stop_reason,
            rounds=self.rounds,
        )


SPEC = AlgorithmSpec(
    name="debate",
    summary="The panel answers, then bounded rounds in which each member reads the others' answers and revises its own "
    "(stopping early once they converge), then one synthesis call streamed live.",
    settings=DebateSettings,
    defaults=DEFAULTS,
    plugin=DebatePlugin,
    plugin_ids=("debate",),
    default_slugs=("vllm-sr/debate",),
    looper=Debate,
    trace=DebateTrace,
    resolve=resolve,
    check=check,
    plugin_models=plugin_models,
    plugin_candidates=lambda plugin: list(plugin.models) if plugin.models else None,
    encoder_models=encoder_models,
)
