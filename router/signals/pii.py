"""PII signal: a token classifier (BIO spans) plus well-tested patterns for emails, phones and cards,
over every window of the messages in scope (all of them by default: a card number in a system or an
assistant message leaves the gateway just as well). Matches when an entity of a type outside
``pii_types_allowed`` is found."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from router.config.signals import PIISignal as PIISpec
from router.signals import pii_labels
from router.signals.base import SignalContext, SignalResult
from router.signals.ml import ModelSignal, scan_detail

if TYPE_CHECKING:
    from router.signals.runtime import ClassifierRuntime

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


def find_patterns(text: str) -> list[dict[str, Any]]:
    """Pattern entities as ``{label, text, start, end}``; cards must pass the Luhn check."""
    return list(_patterns(text))  # a new list: callers add the model's spans to it


# A conversation's windows come back with every turn, and both default PII signals read them: the
# regexes run once per window text. Keys hold the (window-sized) texts: 2048 of them is a few MB.
@lru_cache(maxsize=2048)
def _patterns(text: str) -> tuple[dict[str, Any], ...]:
    out: list[dict[str, Any]] = []
    taken: list[tuple[int, int]] = []

    def add(label: str, m: re.Match[str]) -> None:
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
    return tuple(out)


class PIISignal(ModelSignal):
    type = "pii"
    spec: PIISpec

    def __init__(self, spec: PIISpec, runtime: ClassifierRuntime):
        super().__init__(spec, runtime)
        # Router labels and vLLM-SR's (EMAIL_ADDRESS → EMAIL, PERSON → GIVEN_NAME + SURNAME, ...).
        self._allowed = set(pii_labels.expand(spec.pii_types_allowed))

    @property
    def scope(self) -> str:
        return self.spec.scope

    async def score(self, ctx: SignalContext) -> SignalResult:
        windows, results, cut = await self.infer(ctx, self.scope, self.spec.model)
        entities: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = set()
        for window, res in zip(windows, results):
            found = find_patterns(window.text) if self.spec.use_patterns else []
            for span in res.spans:
                if span.score < self.spec.threshold:
                    continue
                if span.label in pii_labels.NUMERIC_ID_LABELS and not any(c.isdigit() for c in span.text):
                    continue  # an identifier without a digit is not one
                if any(span.start < e["end"] and e["start"] < span.end for e in found):
                    continue  # the pattern's exact match wins over the model's span
                found.append(
                    {
                        "label": span.label,
                        "text": span.text,
                        "start": span.start,
                        "end": span.end,
                        "source": "model",
                        "score": round(span.score, 4),
                    }
                )
            for e in found:
                # Overlapping windows see the same entity twice; offsets become message offsets.
                if (e["label"], e["text"]) in seen:
                    continue
                seen.add((e["label"], e["text"]))
                entities.append({**e, "start": e["start"] + window.start, "end": e["end"] + window.start})
        blocked = [e for e in entities if e["label"] not in self._allowed]
        detail = {
            "entities": blocked,
            "types": sorted({e["label"] for e in blocked}),
            "allowed_found": sorted({e["label"] for e in entities if e["label"] in self._allowed}),
            **scan_detail(windows, cut),
        }
        conf = max((e.get("score", 1.0) for e in blocked), default=0.0)
        return SignalResult(self.type, self.name, bool(blocked), conf, detail=detail)

    def describe(self) -> str:
        return f"PII outside {sorted(self._allowed) or 'nothing allowed'} in {self.spec.scope} messages"
