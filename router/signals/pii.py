"""PII signal: a token classifier (BIO spans) plus well-tested patterns for emails, phones and cards.
Matches when an entity of a type outside ``pii_types_allowed`` is found in the user's messages."""

from __future__ import annotations

import re

from router.config.schema import PIISignal as PIISpec
from router.signals.base import SignalContext, SignalResult
from router.signals.ml import ModelSignal

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]?\d{3,4}(?!\w)")
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
SSN = re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")
IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])")


def luhn_ok(digits: str) -> bool:
    total, double = 0, False
    for ch in reversed(digits):
        d = int(ch)
        if double:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        double = not double
    return total % 10 == 0


def find_patterns(text: str) -> list[dict]:
    """Pattern entities as ``{label, text, start, end}``; cards must pass the Luhn check."""
    out: list[dict] = []
    taken: list[tuple[int, int]] = []

    def add(label: str, m: re.Match) -> None:
        if any(m.start() < e and s < m.end() for s, e in taken):
            return
        taken.append((m.start(), m.end()))
        out.append({"label": label, "text": m.group(0), "start": m.start(), "end": m.end(), "source": "pattern"})

    for m in EMAIL.finditer(text):
        add("EMAIL", m)
    for m in CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group(0))
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            add("CREDIT_CARD", m)
    for m in SSN.finditer(text):
        add("GOVERNMENT_ID", m)
    for m in IPV4.finditer(text):
        add("IP_ADDRESS", m)
    for m in PHONE.finditer(text):
        if sum(c.isdigit() for c in m.group(0)) >= 7:
            add("PHONE", m)
    return out


class PIISignal(ModelSignal):
    type = "pii"

    def __init__(self, spec: PIISpec, runtime):
        super().__init__(spec, runtime)
        self.spec: PIISpec = spec
        self._allowed = {t.upper() for t in spec.pii_types_allowed}

    async def score(self, ctx: SignalContext) -> SignalResult:
        texts = [t for t in ctx.user_texts if t.strip()]
        results = await self.runtime.run_many(self.spec.model, texts)
        entities: list[dict] = []
        truncated = False
        for text, res in zip(texts, results):
            truncated |= res.truncated
            found = find_patterns(text) if self.spec.use_patterns else []
            for span in res.spans:
                if span.score < self.spec.threshold:
                    continue
                if any(span.start < e["end"] and e["start"] < span.end for e in found):
                    continue  # the pattern's exact match wins over the model's span
                found.append({"label": span.label, "text": span.text, "start": span.start, "end": span.end,
                              "source": "model", "score": round(span.score, 4)})
            entities += found
        blocked = [e for e in entities if e["label"] not in self._allowed]
        detail = {"entities": blocked, "types": sorted({e["label"] for e in blocked}),
                  "allowed_found": sorted({e["label"] for e in entities if e["label"] in self._allowed})}
        if truncated:
            detail["truncated"] = True
        conf = max((e.get("score", 1.0) for e in blocked), default=0.0)
        return SignalResult(self.type, self.name, bool(blocked), conf, detail=detail)

    def describe(self) -> str:
        return f"PII outside {sorted(self._allowed) or 'nothing allowed'}"
