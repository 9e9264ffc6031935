"""Self-consistency: k samples (one model at temperature, or several models), semantically equivalent
answers clustered (embedding similarity, a merge vetoed when the entailment model calls the two answers
contradictory), and the most central member of the largest cluster returned. No judge call.

Its confidence is the winning cluster's share of the answers; ``outcome`` is ``consensus`` when that
share is above one half, ``plurality`` otherwise. Without the embedding model the answers are clustered
by their normalised text (the trace says so).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field

from router.config.base import Strict
from router.looper.base import Answer, CallResult, Looper
from router.looper.encoders import Encoders
from router.looper.errors import StageFailure
from router.looper.messages import subcall_body
from router.looper.panel import Member, fan_out
from router.looper.spec import AlgorithmSpec, CheckContext
from router.looper.trace import LooperTrace, TraceModel, TraceSettings
from router.openai.errors import OpenAIError


class SelfConsistencySettings(Strict):
    models: list[str] | None = Field(default=None, min_length=1, max_length=16)  # default: the decision's modelRefs
    samples: int | None = Field(default=None, ge=1, le=16)  # default: 5 for one model, else one per model
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_concurrent: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    similarity_threshold: float | None = Field(default=None, gt=0, le=1)  # embedding cosine to join a cluster
    confirm_with_entailment: bool | None = None  # a contradiction verdict vetoes a merge
    min_successful_responses: int | None = Field(default=None, gt=0)
    cancel_stragglers: bool | None = None
    round_timeout_seconds: float | None = Field(default=None, ge=0.1, le=3600)
    on_error: Literal["skip", "fail"] | None = None
    include_intermediate_responses: bool | None = None
    embedding_model: str | None = None
    nli_model: str | None = None
    trace: TraceSettings | None = None


DEFAULTS = SelfConsistencySettings(
    temperature=0.7,
    similarity_threshold=0.85,
    confirm_with_entailment=True,
    on_error="skip",
    include_intermediate_responses=True,
    cancel_stragglers=True,
    embedding_model="embedding",
    nli_model="nli",
)


class SelfConsistencyPlugin(SelfConsistencySettings):
    id: Literal["self_consistency", "self-consistency"]
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class SelfConsistencyParams:
    samples: tuple[str, ...]  # the model of each sample
    temperature: float | None
    max_concurrent: int
    max_completion_tokens: int | None
    threshold: float
    confirm: bool
    min_successful: int | None
    cancel_stragglers: bool
    timeout: float
    on_error: str
    include_intermediate_responses: bool
    embedding_model: str
    nli_model: str
    trace_body: bool
    trace_headers: bool
    max_total_tokens: int | None = None  # no token budget for this algorithm yet

    @property
    def primary(self) -> str:
        return self.samples[0]

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(self.samples))


def _names(lookup: Any, names: Sequence[str], what: str) -> list[str]:
    out = []
    for m in names:
        spec = lookup.resolve_model(m)
        if spec is None:
            raise OpenAIError(400, f"Unknown {what} model {m!r}.", "invalid_plugin")
        out.append(str(spec.name))
    return out


def resolve(merged: SelfConsistencySettings, ctx: Any) -> SelfConsistencyParams:
    models = _names(ctx.lookup, merged.models or list(ctx.candidates), "self_consistency")
    if not models:
        raise OpenAIError(400, "self_consistency needs models (modelRefs or plugins[].models).", "self_consistency_no_models")
    k = merged.samples or (5 if len(models) == 1 else len(models))
    trace = merged.trace or TraceSettings()
    samples = tuple(models[i % len(models)] for i in range(k))
    return SelfConsistencyParams(
        samples=samples,
        temperature=merged.temperature,
        max_concurrent=merged.max_concurrent or k,
        max_completion_tokens=merged.max_completion_tokens,
        threshold=merged.similarity_threshold or 0.85,
        confirm=merged.confirm_with_entailment is not False,
        min_successful=merged.min_successful_responses,
        cancel_stragglers=merged.cancel_stragglers is not False,
        timeout=merged.round_timeout_seconds or ctx.default_timeout,
        on_error=merged.on_error or "skip",
        include_intermediate_responses=merged.include_intermediate_responses is not False,
        embedding_model=merged.embedding_model or "embedding",
        nli_model=merged.nli_model or "nli",
        trace_body=ctx.trace_body if trace.body is None else trace.body,
        trace_headers=ctx.trace_headers if trace.headers is None else trace.headers,
    )


def check(settings: SelfConsistencySettings, ctx: CheckContext) -> Iterator[str]:
    for j, m in enumerate(settings.models or []):
        yield from ctx.unknown_model(f"models[{j}]", m)
    if not (settings.models or ctx.model_refs):
        yield "models: a self_consistency decision needs models (models or modelRefs)"
    if settings.min_successful_responses and settings.samples and settings.min_successful_responses > settings.samples:
        yield f"min_successful_responses: {settings.min_successful_responses} is more than the {settings.samples} samples"


def plugin_models(plugin: SelfConsistencyPlugin) -> list[tuple[str, str]]:
    return [(f"models[{j}]", m) for j, m in enumerate(plugin.models or [])]


def encoder_models(settings: SelfConsistencySettings) -> list[tuple[str, bool, str]]:
    """Optional: without them the answers are clustered by their normalised text."""
    out = [(settings.embedding_model or "embedding", False, "embedding_model")]
    if settings.confirm_with_entailment is not False:
        out.append((settings.nli_model or "nli", False, "nli_model"))
    return out


# --------------------------------------------------------------------------- clustering (pure)


def cluster(sim: np.ndarray, threshold: float, compatible: Callable[[int, int], bool] | None = None) -> list[list[int]]:
    """Greedy clustering in answer order: an answer joins the cluster whose first member it is most
    similar to, when that similarity reaches ``threshold`` and ``compatible`` (the entailment veto)
    allows it; else it starts a cluster."""
    clusters: list[list[int]] = []
    for i in range(sim.shape[0]):
        ranked = sorted(range(len(clusters)), key=lambda c: -float(sim[i, clusters[c][0]]))
        home = next(
            (
                c
                for c in ranked
                if float(sim[i, clusters[c][0]]) >= threshold and (compatible is None or compatible(clusters[c][0], i))
            ),
            None,
        )
        if home is None:
            clusters.append([i])
        else:
            clusters[home].append(i)
    return clusters


def winner(clusters: list[list[int]], sim: np.ndarray) -> tuple[int, int]:
    """(cluster index, member index): the largest cluster (earliest on ties) and its most central member."""
    best = max(range(len(clusters)), key=lambda c: (len(clusters[c]), -c))
    members = clusters[best]
    centre = max(members, key=lambda i: (sum(float(sim[i, j]) for j in members), -i))
    return best, centre


_NORM = re.compile(r"[^a-z0-9]+")


def text_similarity(texts: Sequence[str]) -> np.ndarray:
    """1 for answers equal after lower-casing and dropping punctuation, else 0 (no embedding model)."""
    keys = [_NORM.sub(" ", t.lower()).strip() for t in texts]
    return np.array([[1.0 if a == b else 0.0 for b in keys] for a in keys], dtype=np.float32)


async def similarity(encoders: Encoders | None, texts: Sequence[str], embedding_model: str) -> tuple[np.ndarray, str]:
    """Cosine similarity of the answers' embeddings, or the exact-text fallback; and which was used."""
    if encoders is not None:
        try:
            vecs = await encoders.embed(embedding_model, list(texts))
            return vecs @ vecs.T, "embedding"
        except Exception as exc:  # noqa: BLE001 - the fallback is the documented behaviour
            return text_similarity(texts), f"exact_text ({type(exc).__name__}: {exc})"
    return text_similarity(texts), "exact_text (no classifier runtime)"


async def contradiction_veto(
    encoders: Encoders | None, texts: Sequence[str], sim: np.ndarray, threshold: float, nli_model: str
) -> tuple[Callable[[int, int], bool] | None, int, str]:
    """A compatibility test for ``cluster``: two similar answers are incompatible when the entailment
    model's verdict either way is contradiction. Only pairs above the threshold are checked."""
    if encoders is None:
        return None, 0, "unavailable"
    n = len(texts)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j and float(sim[i, j]) >= threshold]
    if not pairs:
        return None, 0, "not_needed"
    try:
        verdicts = await encoders.entail(nli_model, [(texts[i], texts[j]) for i, j in pairs])
    except Exception as exc:  # noqa: BLE001 - the veto is optional
        return None, 0, f"unavailable ({type(exc).__name__}: {exc})"
    bad = {(i, j) for (i, j), v in zip(pairs, verdicts, strict=True) if v.label == "contradiction"}
    return (lambda a, b: (a, b) not in bad and (b, a) not in bad), len(pairs), "applied"


# --------------------------------------------------------------------------- trace


class Sample(TraceModel):
    model: str
    cluster: int
    content: str | None = None
    latency_ms: float


class ClusterTrace(TraceModel):
    id: int
    size: int
    share: float
    members: list[int]  # sample indexes
    representative: int


class SelfConsistencyTrace(LooperTrace):
    samples_requested: int
    confidence: float | None = None  # the winning cluster's share of the answers
    chosen_cluster: int | None = None
    chosen_sample: int | None = None
    clustering: str = ""  # embedding | exact_text (why)
    entailment_check: str = ""  # applied | not_needed | unavailable (why) | off
    entailment_pairs: int = 0
    clusters: list[ClusterTrace] = Field(default_factory=list)
    samples: list[Sample] | None = None


# --------------------------------------------------------------------------- the algorithm


class SelfConsistency(Looper):
    name = "self_consistency"

    def __init__(self, run: Any):
        super().__init__(run)
        self.params: SelfConsistencyParams = run.params
        self.answers: list[CallResult] = []
        self.outcome = "consensus"
        self.confidence: float | None = None
        self.clusters: list[list[int]] = []
        self.chosen: tuple[int, int] | None = None
        self.clustering = ""
        self.entailment = "off"
        self.pairs = 0

    async def execute(self) -> Answer:
        p, run = self.params, self.run
        base = subcall_body(run.raw, max_completion_tokens=p.max_completion_tokens, temperature=p.temperature)
        members = [Member(m, base) for m in p.samples]
        await run.say(f"self_consistency: {len(members)} samples ({', '.join(dict.fromkeys(p.samples))})")
        with run.ledger.stage("samples"):
            enough = p.min_successful if p.min_successful and p.min_successful < len(members) else None
            result = await fan_out(
                run,
                members,
                stage="samples",
                timeout=p.timeout,
                max_concurrent=p.max_concurrent,
                enough=enough,
                cancel_stragglers=p.cancel_stragglers,
                on_error=p.on_error,
                label="self_consistency",
            )
        self.answers = [r for _, r in result.answers if r.content.strip()]
        if not self.answers:
            failures = [f for f in run.ledger.failures if f.stage == "samples"]
            timeouts = bool(failures) and all(f.reason == "timeout" for f in failures)
            raise StageFailure(
                "samples",
                504 if timeouts else 502,
                "all_samples_failed",
                "Every self-consistency sample failed or was empty: " + "; ".join(f"{f.model}: {f.reason}" for f in failures),
            )
        texts = [a.content for a in self.answers]
        with run.ledger.stage("clustering"):
            sim, self.clustering = await similarity(run.encoders, texts, p.embedding_model)
            compatible = None
            if p.confirm and self.clustering == "embedding":
                compatible, self.pairs, self.entailment = await contradiction_veto(
                    run.encoders, texts, sim, p.threshold, p.nli_model
                )
            threshold = p.threshold if self.clustering == "embedding" else 1.0
            self.clusters = cluster(sim, threshold, compatible)
            self.chosen = winner(self.clusters, sim)
        c, i = self.chosen
        self.confidence = len(self.clusters[c]) / len(self.answers)
        self.outcome = "consensus" if self.confidence > 0.5 else "plurality"
        await run.say(
            f"self_consistency: {len(self.clusters)} clusters; the largest holds {len(self.clusters[c])} of "
            f"{len(self.answers)} answers"
        )
        chosen = self.answers[i]
        return Answer(chosen.content, [], chosen.finish_reason or "stop", self.outcome)

    def trace(self) -> SelfConsistencyTrace:
        p = self.params
        of = {i: c for c, members in enumerate(self.clusters) for i in members}
        n = len(self.answers) or 1
        trace = SelfConsistencyTrace(
            **LooperTrace.common(self.name, self.run.decision, self.run.ledger, self.outcome),
            samples_requested=len(p.samples),
            confidence=None if self.confidence is None else round(self.confidence, 4),
            chosen_cluster=self.chosen[0] if self.chosen else None,
            chosen_sample=self.chosen[1] if self.chosen else None,
            clustering=self.clustering,
            entailment_check=self.entailment,
            entailment_pairs=self.pairs,
            clusters=[
                ClusterTrace(id=c, size=len(m), share=round(len(m) / n, 4), members=m, representative=m[0])
                for c, m in enumerate(self.clusters)
            ],
        )
        if p.include_intermediate_responses:
            trace.samples = [
                Sample(model=a.model, cluster=of.get(i, -1), content=a.content, latency_ms=round(a.latency_ms, 3))
                for i, a in enumerate(self.answers)
            ]
        return trace


SPEC = AlgorithmSpec(
    name="self_consistency",
    summary="k samples (one model at temperature, or several models) clustered by meaning; the most central answer "
    "of the largest cluster is returned, no judge call; confidence = that cluster's share.",
    settings=SelfConsistencySettings,
    defaults=DEFAULTS,
    plugin=SelfConsistencyPlugin,
    plugin_ids=("self_consistency", "self-consistency"),
    default_slugs=("vllm-sr/self-consistency",),
    looper=SelfConsistency,
    trace=SelfConsistencyTrace,
    resolve=resolve,
    check=check,
    plugin_models=plugin_models,
    plugin_candidates=lambda plugin: list(plugin.models) if plugin.models else None,
    encoder_models=encoder_models,
)
