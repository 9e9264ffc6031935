"""Domain signal: the best category by embedding similarity to each category's description and examples
(or a user-supplied sequence classifier). Rule leaves name the category: ``{type: domain, name: math}``."""

from __future__ import annotations

import numpy as np

from router.config.schema import DomainSignal as DomainSpec
from router.signals.base import SignalContext, SignalResult
from router.signals.ml import ModelSignal


class DomainSignal(ModelSignal):
    type = "domain"

    def __init__(self, spec: DomainSpec, runtime):
        super().__init__(spec, runtime)
        self.spec: DomainSpec = spec
        self._centroids: np.ndarray | None = None

    def model_names(self) -> list[str]:
        return [self.spec.classifier_model] if self.spec.classifier_model else [self.spec.model]

    def leaf_keys(self) -> set[str]:
        return {self.key} | {f"domain:{c.name}" for c in self.spec.categories}

    async def prepare(self) -> None:
        if self.spec.classifier_model:
            return
        rows = []
        for cat in self.spec.categories:
            texts = [t for t in [cat.description, *cat.examples] if t.strip()] or [cat.name]
            vecs = await self.embed_texts(texts, self.spec.model)
            centroid = vecs.mean(axis=0)
            rows.append(centroid / max(float(np.linalg.norm(centroid)), 1e-12))
        self._centroids = np.stack(rows)

    async def score(self, ctx: SignalContext) -> SignalResult:
        if self.spec.classifier_model:
            windows, results, cut = await self.infer(ctx, "last_user", self.spec.classifier_model)
            # A long prompt: average the windows' label distributions.
            probs = {label: sum(r.probs[label] for r in results) / len(results) for label in results[0].probs}
            best = max(probs, key=probs.__getitem__)
            conf, scores, truncated = probs[best], {k: round(v, 4) for k, v in probs.items()}, cut
        else:
            assert self._centroids is not None
            vec, truncated = await self.embed_prompt(ctx, self.spec.model)
            sims = self._centroids @ vec
            k = int(sims.argmax())
            best, conf = self.spec.categories[k].name, float(sims[k])
            scores = {c.name: round(float(s), 4) for c, s in zip(self.spec.categories, sims)}
        matched = conf >= self.spec.threshold
        detail = {"category": best, "confidence": round(conf, 4), "scores": scores}
        if truncated:
            detail["truncated"] = True
        leaves = (f"domain:{best}",) if matched else ()
        return SignalResult(self.type, self.name, matched, max(conf, 0.0), leaves=leaves, detail=detail)

    def describe(self) -> str:
        return f"best of {len(self.spec.categories)} categories >= {self.spec.threshold}"
