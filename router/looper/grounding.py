"""Grounding-aware Fusion: score each panel answer, claim by claim, with the local entailment model
before the judge reads the panel — no extra LLM calls.

* Reference: ``context`` — the request's own evidence (tool results; ``<document>``/``<context>``
  blocks and ``Context:``/``Documents:``/``Sources:`` sections of system and user messages);
  ``panel`` — the other panel answers (cross-model entailment); ``hybrid`` — context when the request
  carries any, else panel.
* An answer is split into claims (sentences, code blocks left out). A claim's support is
  P(entailment) + ½·P(neutral) against its reference (context: the best of the most similar evidence
  chunks; panel: the mean over the other answers); it is *contradicted* when contradiction is the most
  likely verdict. An answer's score is its claims' mean support minus ``nli_contradiction_penalty`` ×
  the share of its claims that are contradicted, in [0, 1].
* Policies: ``weight`` (the judge and the synthesis read every answer's score and contradicted claims
  and are told to trust grounded answers more), ``annotate`` (the same notes, no instruction: the
  judge decides what to make of them), ``filter`` (answers below ``min_score`` are left out, keeping at
  least ``min_keep``, best first).
* Failures (model missing or slow, a bug) follow ``on_error``: ``skip`` runs plain Fusion and the
  trace says why; ``fail`` ends the run with ``502 grounding_failed``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field

from router.config.base import Strict
from router.looper.encoders import Encoders, Entailment
from router.looper.trace import TraceModel

Reference = Literal["hybrid", "context", "panel"]
Policy = Literal["weight", "annotate", "filter"]


class GroundingSettings(Strict):
    """``algorithm.fusion.grounding`` (the reference's names, plus the claim and model knobs)."""

    enabled: bool = False
    reference: Reference = "hybrid"
    policy: Policy = "weight"
    min_score: float = Field(default=0.5, ge=0, le=1)
    min_keep: int = Field(default=1, ge=1)
    nli_contradiction_penalty: float = Field(default=0.3, ge=0, le=1)
    on_error: Literal["skip", "fail"] = "skip"
    max_claims: int = Field(default=8, ge=1, le=64)  # per answer; the rest is not scored (flagged)
    max_claim_chars: int = Field(default=400, ge=20, le=4000)  # a longer sentence is cut (flagged)
    context_chunks: int = Field(default=3, ge=1, le=16)  # evidence chunks each claim is checked against
    timeout_seconds: float = Field(default=5.0, ge=0.05, le=120)  # the whole stage
    nli_model: str = "nli"
    embedding_model: str = "embedding"


# --------------------------------------------------------------------------- claims


@dataclass(frozen=True, slots=True)
class Claims:
    claims: list[str]
    total: int  # sentences found
    dropped: int  # sentences over max_claims, not scored
    cut: int  # sentences shortened to max_claim_chars

    @property
    def truncated(self) -> bool:
        return bool(self.dropped or self.cut)


_FENCE = re.compile(r"```.*?(```|$)", re.S)
_SPLIT = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])|\n+")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)]|#+)\s+")


def split_claims(text: str, max_claims: int = 8, max_chars: int = 400) -> Claims:
    """Sentences (and list items) of an answer; code blocks are not claims."""
    prose = _FENCE.sub("\n", text or "")
    sentences: list[str] = []
    for part in _SPLIT.split(prose):
        s = _BULLET.sub("", part).strip().strip("*_").strip()
        if len(s.split()) >= 2 or (s and not sentences and len(s) > 0):
            sentences.append(s)
    if not sentences and prose.strip():
        sentences = [prose.strip()]
    kept = sentences[:max_claims]
    cut = sum(1 for s in kept if len(s) > max_chars)
    return Claims([s[:max_chars] for s in kept], len(sentences), max(0, len(sentences) - max_claims), cut)


# --------------------------------------------------------------------------- evidence

_TAGGED = re.compile(r"<(document|doc|context|source)\b[^>]*>(.*?)</\1>", re.S | re.I)
_SECTION = re.compile(r"(?:^|\n)\s*(?:context|documents?|sources?|reference|evidence)\s*:\s*\n?(.+)$", re.S | re.I)


def _text(content: Any) -> str:
    """A message's text: the string, or the text parts of a content list."""
    if isinstance(content, list):
        return "\n".join(str(p.get("text")) for p in content if isinstance(p, dict) and p.get("text"))
    return content if isinstance(content, str) else ""


def evidence_texts(messages: Sequence[dict[str, Any]]) -> list[str]:
    """The request's own evidence: tool results, and documents inside system/user messages."""
    out: list[str] = []
    for msg in messages:
        role = msg.get("role")
        text = _text(msg.get("content"))
        if not text.strip():
            continue
        if role in ("tool", "function"):
            out.append(text.strip())
        elif role in ("system", "user", "developer"):
            tagged = [m.group(2).strip() for m in _TAGGED.finditer(text)]
            if tagged:
                out += [t for t in tagged if t]
                continue
            m = _SECTION.search(text)
            if m and m.group(1).strip():
                out.append(m.group(1).strip())
    return out


def chunk(texts: Sequence[str], max_chars: int = 600) -> list[str]:
    """Evidence in pieces the entailment model reads whole (sentences packed up to ``max_chars``)."""
    chunks: list[str] = []
    for text in texts:
        cur = ""
        for s in (x.strip() for x in _SPLIT.split(text)):
            if not s:
                continue
            while len(s) > max_chars:  # one huge line (a JSON blob): hard cuts
                if cur:
                    chunks.append(cur)
                    cur = ""
                chunks.append(s[:max_chars])
                s = s[max_chars:]
            if cur and len(cur) + 1 + len(s) > max_chars:
                chunks.append(cur)
                cur = s
            else:
                cur = f"{cur} {s}".strip()
        if cur:
            chunks.append(cur)
    return chunks


# --------------------------------------------------------------------------- scoring (pure)


@dataclass(frozen=True, slots=True)
class ClaimVerdict:
    claim: str
    support: float  # P(entail) + ½ P(neutral), against the reference
    contradiction: float
    contradicted: bool
    against: str  # what contradicted it: "context" or the peer model(s)


@dataclass(slots=True)
class AnswerScore:
    model: str
    score: float
    claims: list[ClaimVerdict]
    claims_total: int
    truncated: bool


def support(e: Entailment) -> float:
    return e.entailment + 0.5 * e.neutral


def verdict_of(claim: str, results: Sequence[tuple[str, Entailment]], mode: str) -> ClaimVerdict:
    """One claim's verdict from its (reference label, entailment) results. ``context``: the most decisive
    of the chunks it was checked against; ``panel``: the mean over the peers."""
    if not results:
        return ClaimVerdict(claim, 0.5, 0.0, False, "")
    if mode == "context":
        _, best = max(results, key=lambda r: max(r[1].entailment, r[1].contradiction))
        contra = best.label == "contradiction"
        return ClaimVerdict(claim, support(best), best.contradiction, contra, "context" if contra else "")
    e = sum(r.entailment for _, r in results) / len(results)
    n = sum(r.neutral for _, r in results) / len(results)
    c = sum(r.contradiction for _, r in results) / len(results)
    contra = c > max(e, n)
    against = ",".join(sorted({lab for lab, r in results if r.label == "contradiction"})) if contra else ""
    return ClaimVerdict(claim, e + 0.5 * n, c, contra, against)


def answer_score(verdicts: Sequence[ClaimVerdict], penalty: float) -> float:
    if not verdicts:
        return 0.5  # nothing checkable: neither grounded nor contradicted
    mean = sum(v.support for v in verdicts) / len(verdicts)
    contradicted = sum(1 for v in verdicts if v.contradicted) / len(verdicts)
    return float(min(1.0, max(0.0, mean - penalty * contradicted)))


def decide(scores: Sequence[AnswerScore], policy: str, min_score: float, min_keep: int) -> dict[str, str]:
    """model → action: ``kept`` / ``dropped`` (filter), ``weighted`` (weight), ``annotated`` (annotate)."""
    if policy == "weight":
        return {s.model: "weighted" for s in scores}
    if policy == "annotate":
        return {s.model: "annotated" for s in scores}
    ranked = sorted(scores, key=lambda s: -s.score)  # stable: panel order breaks ties
    keep = {s.model for s in ranked if s.score >= min_score}
    for s in ranked:
        if len(keep) >= min(min_keep, len(scores)):
            break
        keep.add(s.model)
    return {s.model: "kept" if s.model in keep else "dropped" for s in scores}


# --------------------------------------------------------------------------- trace


class ContradictedClaim(TraceModel):
    claim: str
    contradiction: float
    against: str


class GroundedAnswer(TraceModel):
    model: str
    score: float
    action: str  # weighted | annotated | kept | dropped
    claims: int
    claims_total: int
    # More sentences than max_claims, a sentence cut to max_claim_chars, or a premise (a peer's answer,
    # an evidence chunk) longer than the entailment model's window.
    truncated: bool = False
    contradicted_claims: list[ContradictedClaim] = Field(default_factory=list)
    reason: str = ""


class GroundingTrace(TraceModel):
    status: str  # applied | skipped | failed
    reason: str = ""  # why skipped / failed: panel_of_one, timeout, model_unavailable: ..., error: ...
    reference: str = ""  # context | panel (what was actually used)
    policy: str = ""
    min_score: float | None = None
    pairs: int = 0  # entailment pairs scored
    latency_ms: float = 0.0
    answers: list[GroundedAnswer] = Field(default_factory=list)


# --------------------------------------------------------------------------- the stage


@dataclass(slots=True)
class Outcome:
    trace: GroundingTrace
    actions: dict[str, str] = field(default_factory=dict)
    scores: dict[str, AnswerScore] = field(default_factory=dict)

    @property
    def applied(self) -> bool:
        return self.trace.status == "applied"

    def keep(self, model: str) -> bool:
        return self.actions.get(model) != "dropped"

    def note(self, model: str) -> str:
        """What the judge reads beside an answer (policies ``weight`` and ``annotate``)."""
        s = self.scores.get(model)
        if s is None or self.actions.get(model) not in ("weighted", "annotated"):
            return ""
        bad = [v.claim for v in s.claims if v.contradicted]
        line = f"(groundedness {s.score:.2f} against the {self.trace.reference}"
        return line + (f"; contradicted claims: {' | '.join(bad)})" if bad else ")")


ANNOTATE_NOTE = (
    "Each panel answer carries a groundedness score from 0 to 1 from an entailment check of its claims against the {reference}."
)
WEIGHT_NOTE = ANNOTATE_NOTE + (
    " Trust well-grounded answers more; treat contradicted claims as likely wrong unless you can show otherwise."
)


class GroundingFailed(RuntimeError):
    pass


async def ground(
    encoders: Encoders | None, settings: GroundingSettings, answers: Sequence[tuple[str, str]], messages: Sequence[dict[str, Any]]
) -> Outcome:
    """Score ``answers`` ((model, text) in panel order). Never raises under ``on_error: skip``."""
    t0 = time.perf_counter()
    evidence = evidence_texts(messages)
    mode = "context" if settings.reference == "context" or (settings.reference == "hybrid" and evidence) else "panel"
    base = GroundingTrace(status="skipped", reference=mode, policy=settings.policy, min_score=settings.min_score)
    if mode == "context" and not evidence:
        base.reason = "no_context"  # reference: context, and the request carries no evidence
        return Outcome(base)
    if mode == "panel" and len(answers) < 2:
        base.reason = "panel_of_one"
        return Outcome(base)
    try:
        if encoders is None:
            raise GroundingFailed("model_unavailable: no classifier runtime in this process")
        scores, pairs = await asyncio.wait_for(_score(encoders, settings, answers, evidence, mode), settings.timeout_seconds)
    except TimeoutError:
        reason = f"timeout: entailment took longer than {settings.timeout_seconds:g}s"
    except Exception as exc:  # noqa: BLE001 - grounding is optional; on_error decides what a failure means
        name = type(exc).__name__
        reason = (
            str(exc)
            if isinstance(exc, GroundingFailed)
            else (f"model_unavailable: {exc}" if name in ("ModelUnavailable", "ModelLoadError") else f"error: {name}: {exc}")
        )
    else:
        actions = decide(scores, settings.policy, settings.min_score, settings.min_keep)
        graded = []
        for s in scores:
            bad = [
                ContradictedClaim(claim=v.claim, contradiction=round(v.contradiction, 4), against=v.against)
                for v in s.claims
                if v.contradicted
            ]
            why = f"score {s.score:.2f} < min_score {settings.min_score:g}" if actions[s.model] == "dropped" else ""
            graded.append(
                GroundedAnswer(
                    model=s.model,
                    score=round(s.score, 4),
                    action=actions[s.model],
                    claims=len(s.claims),
                    claims_total=s.claims_total,
                    truncated=s.truncated,
                    contradicted_claims=bad,
                    reason=why,
                )
            )
        trace = GroundingTrace(
            status="applied",
            reference=mode,
            policy=settings.policy,
            min_score=settings.min_score,
            pairs=pairs,
            latency_ms=round((time.perf_counter() - t0) * 1000, 3),
            answers=graded,
        )
        return Outcome(trace, actions, {s.model: s for s in scores})
    base.status = "failed" if settings.on_error == "fail" else "skipped"
    base.reason = reason
    base.latency_ms = round((time.perf_counter() - t0) * 1000, 3)
    return Outcome(base)


async def _score(
    encoders: Encoders, settings: GroundingSettings, answers: Sequence[tuple[str, str]], evidence: list[str], mode: str
) -> tuple[list[AnswerScore], int]:
    claims = [split_claims(text, settings.max_claims, settings.max_claim_chars) for _, text in answers]
    pairs: list[tuple[str, str]] = []
    index: list[tuple[int, int, str]] = []  # (answer, claim, reference label) per pair
    if mode == "context":
        chunks = chunk(evidence)
        flat = [c for cl in claims for c in cl.claims]
        if len(chunks) > settings.context_chunks and flat:
            vecs = await encoders.embed(settings.embedding_model, chunks + flat)
            sims = vecs[len(chunks) :] @ vecs[: len(chunks)].T
        else:
            sims = np.zeros((len(flat), len(chunks)), dtype=np.float32)
        k = 0
        for a, cl in enumerate(claims):
            for c, claim in enumerate(cl.claims):
                best = list(np.argsort(-sims[k], kind="stable")[: settings.context_chunks]) if chunks else []
                for j in best:
                    pairs.append((chunks[int(j)], claim))
                    index.append((a, c, "context"))
                k += 1
    else:
        for a, cl in enumerate(claims):
            for b, (peer, text) in enumerate(answers):
                if b == a or not text.strip():
                    continue
                for c, claim in enumerate(cl.claims):
                    pairs.append((text, claim))
                    index.append((a, c, peer))
    results = await encoders.entail(settings.nli_model, pairs) if pairs else []
    grouped: dict[tuple[int, int], list[tuple[str, Entailment]]] = {}
    cut: set[int] = set()  # answers a pair of which did not fit the model's window (a long premise)
    for (a, c, label), r in zip(index, results, strict=True):
        grouped.setdefault((a, c), []).append((label, r))
        if r.truncated:
            cut.add(a)
    out = []
    for a, (model, _) in enumerate(answers):
        verdicts = [verdict_of(claim, grouped.get((a, c), []), mode) for c, claim in enumerate(claims[a].claims)]
        out.append(
            AnswerScore(
                model,
                answer_score(verdicts, settings.nli_contradiction_penalty),
                verdicts,
                claims[a].total,
                claims[a].truncated or a in cut,
            )
        )
    return out, len(pairs)
