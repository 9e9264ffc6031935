"""Domain signal: the best category by embedding similarity to each category's description and examples
(or a user-supplied sequence classifier). Rule leaves name the category: ``{type: domain, name: math}``.

Categories that name MMLU subjects (``mmlu_categories``, vLLM-SR's shape) are classified among all 14
built-in MMLU categories (router/signals/mmlu.py): a category matches when the winning subject is one
of its own, so a prompt about chemistry never matches ``business`` just because ``business`` was the
only subject configured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from router.config.signals import DomainSignal as DomainSpec
from router.signals.base import SignalContext, SignalResult
from router.signals.ml import ModelSignal
from router.signals.mmlu import MMLU_CATEGORIES

if TYPE_CHECKING:
    from router.signals.runtime import ClassifierRuntime


@dataclass(frozen=True, slots=True)
class _Class:
    label: str  # what the classifier reports (a category name, or an MMLU subject)
    texts: tuple[str, ...]  # the centroid's texts
    leaves: tuple[str, ...]  # the configured categories it satisfies


def classes_of(spec: DomainSpec) -> list[_Class]:
    out = []
    for cat in spec.categories:
        if not cat.mmlu_categories:
            texts = tuple(t for t in [cat.description, *cat.examples] if t.strip()) or (cat.name,)
            out.append(_Class(cat.name, texts, (cat.name,)))
    if any(cat.mmlu_categories for cat in spec.categories):
        for subject, info in MMLU_CATEGORIES.items():
            owners = tuple(c.name for c in spec.categories if subject in c.mmlu_categories)
            out.append(_Class(subject, (info.description, *info.examples), owners))
    return out


class DomainSignal(ModelSignal):
    type = "domain"

    def __init__(self, spec: DomainSpec, runtime: ClassifierRuntime):
        super().__init__(spec, runtime)
        self.spec: DomainSpec = spec
        self._classes = classes_of(spec)
        self._centroids: np.ndarray | None = None

    def model_names(self) -> list[str]:
        return self.spec.model_names()

    async def prepare(self) -> None:
        if self.spec.classifier_model:
            return
        rows = []
        for cls in self._classes:
            vecs = await self.embed_texts(list(cls.texts), self.spec.model)
            centroid = vecs.mean(axis=0)
            rows.append(centroid / max(float(np.linalg.norm(centroid)), 1e-12))
        self._centroids = np.stack(rows)

    async def score(self, ctx: SignalContext) -> SignalResult:
        if self.spec.classifier_model:
            _, results, cut = await self.infer(ctx, "last_user", self.spec.classifier_model)
            # A long prompt: average the windows' label distributions.
            probs = {label: sum(r.probs[label] for r in results) / len(results) for label in results[0].probs}
            best = max(probs, key=probs.__getitem__)
            conf, scores, truncated = probs[best], {k: round(v, 4) for k, v in probs.items()}, cut
            owners: tuple[str, ...] = (best,)
        else:
            assert self._centroids is not None
            vec, truncated = await self.embed_prompt(ctx, self.spec.model)
            sims = self._centroids @ vec
            k = int(sims.argmax())
            best, conf, owners = self._classes[k].label, float(sims[k]), self._classes[k].leaves
            scores = {c.label: round(float(s), 4) for c, s in zip(self._classes, sims)}
        matched = conf >= self.spec.threshold and bool(owners)
        detail = {"category": best, "confidence": round(conf, 4), "scores": scores}
        if truncated:
            detail["truncated"] = True
        leaves = tuple(f"domain:{name}" for name in owners) if matched else ()
        return SignalResult(self.type, self.name, matched, max(conf, 0.0), leaves=leaves, detail=detail)

    def describe(self) -> str:
        return f"best of {len(self._classes)} categories >= {self.spec.threshold}"
