"""Built-in Fusion prompts (version ``fusion-v1``) and ``{{placeholder}}`` rendering."""

from __future__ import annotations

import re

PROMPT_VERSION = "fusion-v1"

ANALYSIS_TEMPLATE = """You are the judge of a panel of AI models that each answered the same request independently.
Compare their answers. Do not answer the request yourself.

Original request:
{{original}}

Panel answers:
{{responses}}

Reply with one JSON object and nothing else, with these keys:
- "consensus": list of points the answers agree on
- "contradictions": list of {"topic": str, "stances": [{"model": str, "stance": str}]}
- "partial_coverage": list of {"models": [str], "point": str} for points only some answers cover
- "unique_insights": list of {"model": str, "insight": str} worth keeping from one answer
- "blind_spots": list of things every answer missed or got wrong"""

SYNTHESIS_TEMPLATE = """You write the final answer to the user's latest request. Several models answered it
independently and a judge analysed their answers. Use the agreed points, resolve contradictions by
reasoning about which stance is correct, keep the valuable unique insights, and cover the blind spots.
Answer the user directly, as a single assistant; do not mention the panel, the judge or this process.

Original request:
{{original}}

Panel answers:
{{responses}}

Judge analysis:
{{analysis}}"""

_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def render(template: str, **values: str) -> str:
    # One pass, so text inside a panel answer that looks like a placeholder is never expanded.
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)
