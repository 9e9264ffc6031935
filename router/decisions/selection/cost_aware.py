"""``cost_aware``: the cheapest modelRef for this request, priced from ``models[].pricing``: the
request's estimated prompt tokens at ``prompt_per_1m`` plus its completion (the cap it asks for, else
``completion_tokens``) at ``completion_per_1m``. Ties keep the declared order."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import Field

from router.config.base import Strict
from router.decisions.selection.spec import (
    CheckContext,
    SelectContext,
    Selection,
    SelectionSpec,
)


class CostAwareSettings(Strict):
    # The completion length a price assumes when the request sets no max_completion_tokens / max_tokens.
    completion_tokens: int = Field(default=256, gt=0)


def price(ctx: SelectContext, model: str, prompt: int, completion: int) -> float:
    f = ctx.facts(model)
    return (prompt * (f.input_price or 0.0) + completion * (f.output_price or 0.0)) / 1_000_000


def select(settings: CostAwareSettings, ctx: SelectContext) -> Selection:
    prompt, cap = ctx.estimate()
    completion = cap or settings.completion_tokens
    costs = {c.model: price(ctx, c.model, prompt, completion) for c in ctx.candidates}
    chosen = min(costs, key=lambda m: costs[m])  # min keeps the first of equals: declared order
    others = sorted((v for m, v in costs.items() if m != chosen))
    vs = f" (next {others[0]:.6g})" if others else ""
    return Selection(chosen, "cost_aware", f"cheapest estimate {costs[chosen]:.6g} for ~{prompt}+{completion} tokens{vs}", costs)


def check(_settings: CostAwareSettings, ctx: CheckContext) -> Iterator[str]:
    currencies: dict[str, str] = {}
    for j, (model, _) in enumerate(ctx.model_refs):
        facts = ctx.facts(model)
        if facts is None:
            continue  # an unknown model is reported by the modelRefs check
        if facts.input_price is None and facts.output_price is None:
            yield (
                f"modelRefs[{j}].model: cost_aware selection needs a price for {model!r}: set "
                f"{ctx.model_path(model)}.pricing (prompt_per_1m, completion_per_1m)"
            )
            continue
        currency = ctx.currency(model)
        if currency is not None:
            currencies[model] = currency
    if len(set(currencies.values())) > 1:
        yield f"modelRefs: cost_aware selection cannot compare prices in different currencies ({currencies})"


SPEC = SelectionSpec(
    name="cost_aware",
    summary="The cheapest modelRef for this request, from `models[].pricing` (prompt estimate + completion cap).",
    settings=CostAwareSettings,
    select=select,
    check=check,
)
