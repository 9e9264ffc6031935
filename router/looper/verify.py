"""Self-verification: the model rates its own answer (a confidence method, and the fallback when a
backend returns no logprobs)."""

from __future__ import annotations

from typing import Any

from router.looper.errors import UpstreamError
from router.looper.messages import original_text
from router.looper.scoring import VERIFY_TEMPLATE, Score, parse_verdict
from router.looper.templates import render

# The verdict is a short JSON object (its cap); a budget adds the verification template's own words.
VERDICT_TOKENS = 96
VERIFY_TOKENS = VERDICT_TOKENS + 80


async def verify(run: Any, model: str, answer: str, timeout: float, *, stage: str, why: str = "") -> Score:
    """Ask ``model`` how sure it is of ``answer`` (the self_verify method, or the fallback when a
    backend returns no logprobs); an unparseable verdict is no evidence, not zero."""
    original = original_text(run.raw.get("messages") or [])
    prompt = render(VERIFY_TEMPLATE, original=original, answer=answer)
    try:
        result = await run.call(
            model,
            {"messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_completion_tokens": VERDICT_TOKENS},
            timeout,
            stage=stage,
        )
    except UpstreamError as exc:
        return Score(None, "self_verify", 0, f"verifier_failed:{exc.reason}")
    score = parse_verdict(result.content)
    reason = f"{why}; {score.reason}" if why else score.reason
    return Score(score.value, "self_verify", 0, reason.strip("; "))
