"""Confidence of an answer, from its token logprobs or from the model's own verdict.

All scores are probabilities in [0, 1], so one threshold in (0, 1] means the same for every method:
* ``avg_logprob``: the geometric mean of the chosen tokens' probabilities, exp(mean logprob);
* ``margin``: the mean, over tokens, of the gap between the two most likely tokens' probabilities
  (1 = the model never hesitated between two tokens, 0 = it always did);
* ``hybrid``: a weighted mix of the two;
* ``self_verify``: the model rates its own answer, as JSON ``{"confidence": x, "reason": "..."}``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from router.openai.upstream import TokenLogprob

METHOD_THRESHOLDS = {"avg_logprob": 0.6, "margin": 0.5, "hybrid": 0.5, "self_verify": 0.7}

VERIFY_TEMPLATE = """Rate how likely the answer below is correct and complete for the request, from 0.0 (certainly
wrong) to 1.0 (certainly right). Reply with one JSON object and nothing else:
{"confidence": <number between 0 and 1>, "reason": "<one short sentence>"}

Request:
{{original}}

Answer:
{{answer}}"""

_NUMBER = re.compile(r"(?<![\w.])(0(?:\.\d+)?|1(?:\.0+)?|\.\d+)(?![\w.])")


@dataclass(frozen=True, slots=True)
class Score:
    value: float | None  # None: no evidence (no logprobs, unparseable verdict)
    method: str
    tokens: int = 0
    reason: str = ""


def avg_logprob(tokens: Sequence[TokenLogprob]) -> float:
    return math.exp(sum(t.logprob for t in tokens) / len(tokens))


def margin(tokens: Sequence[TokenLogprob]) -> float | None:
    """Mean top-1 minus top-2 probability; None when no token carries top_logprobs."""
    gaps = []
    for t in tokens:
        probs = sorted((math.exp(c.logprob) for c in t.top_logprobs), reverse=True)
        if not probs:
            continue
        gaps.append(probs[0] - (probs[1] if len(probs) > 1 else 0.0))
    return sum(gaps) / len(gaps) if gaps else None


def from_logprobs(tokens: Sequence[TokenLogprob] | None, method: str, logprob_weight: float = 0.5) -> Score:
    if not tokens:
        return Score(None, method, 0, "no_logprobs")
    n = len(tokens)
    if method == "avg_logprob":
        return Score(avg_logprob(tokens), method, n)
    m = margin(tokens)
    if m is None:
        return Score(None, method, n, "no_top_logprobs")
    if method == "margin":
        return Score(m, method, n)
    return Score(logprob_weight * avg_logprob(tokens) + (1 - logprob_weight) * m, method, n)


def parse_verdict(text: str) -> Score:
    """The self-verification reply: JSON with ``confidence`` (anywhere in the text), else a lone number."""
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        try:
            doc = orjson.loads(text[start : end + 1])
        except orjson.JSONDecodeError:
            doc = None
        if (
            isinstance(doc, dict)
            and isinstance(doc.get("confidence"), (int, float))
            and not isinstance(doc.get("confidence"), bool)
        ):
            value = min(1.0, max(0.0, float(doc["confidence"])))
            return Score(value, "self_verify", 0, str(doc.get("reason") or "")[:200])
    m = _NUMBER.search(text)
    if m:
        return Score(float(m.group(1)), "self_verify", 0, "a bare number")
    return Score(None, "self_verify", 0, "unparseable_verdict")
