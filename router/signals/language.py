"""Language signal: a real language identifier (py3langid, 97 languages, ~20 µs per prompt)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from router.config.signals import LanguageSignal as LanguageSpec
from router.signals.base import Signal, SignalContext, SignalResult


@lru_cache(maxsize=1)
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


# Language is clear from a few sentences; a megabyte prompt must not cost a megabyte of n-grams.
MAX_CHARS = 4096


def detect(text: str) -> tuple[str, float]:
    lang, prob = _identifier().classify(text[:MAX_CHARS])
    return str(lang), float(prob)


class LanguageSignal(Signal):
    type = "language"

    def __init__(self, spec: LanguageSpec):
        super().__init__(spec)
        self.spec: LanguageSpec = spec
        self._wanted = {lang.lower() for lang in spec.languages}

    def evaluate_now(self, ctx: SignalContext) -> SignalResult:
        if not ctx.last_user_text.strip():
            return SignalResult(self.type, self.name, False, 0.0, detail={"language": None})
        cached = ctx.cache.get("language")
        if cached is None:
            cached = ctx.cache["language"] = detect(ctx.last_user_text)
        lang, prob = cached
        matched = lang in self._wanted and prob >= self.spec.min_confidence
        return SignalResult(self.type, self.name, matched, prob, detail={"language": lang})

    async def start(self) -> None:
        _identifier()

    def describe(self) -> str:
        return f"language in {sorted(self._wanted)}"
