"""What a Fusion run's token budget will allow, asked of the planner itself: tests pick budgets just
above and below a panel size's threshold and then check that the run (in-process or through Envoy)
does what the plan says and spends no more than the budget."""

from __future__ import annotations

from typing import Any

from router.config.schema import Config
from router.decisions.policy import compile_policy
from router.looper.base import LooperRun
from router.looper.errors import StageFailure
from router.looper.fusion import Fusion
from router.looper.merge import merge
from router.looper.messages import original_text, subcall_body
from router.looper.panel import Member
from router.looper.registry import ALGORITHMS
from router.looper.spec import ResolveContext
from router.openai.types import ChatCompletionRequest


def fusion_plan(config: Config, decision: str, raw: dict[str, Any], limit: int) -> tuple[int, bool, bool]:
    """(panel members called, judge planned, synthesis planned) for ``raw`` under ``limit`` tokens."""
    policy = compile_policy(config)
    d = next(d for d in config.routing.decisions if d.name == decision)
    spec = ALGORITHMS["fusion"]
    merged = merge(spec.settings, spec.defaults, d.algorithm_settings)
    ctx = ResolveContext(
        lookup=policy,
        candidates=[r.model for r in d.modelRefs],
        weights={},
        default_timeout=10.0,
        trace_body=True,
        trace_headers=True,
        facts=policy.facts,
    )
    params = spec.resolve(merged, ctx)
    run = LooperRun(ChatCompletionRequest.model_validate(raw), raw, params, d.name, "plan", None, policy.facts)  # type: ignore[arg-type]
    run.budget.limit = limit
    looper = Fusion(run)
    base = subcall_body(raw, max_completion_tokens=params.max_completion_tokens, temperature=params.temperature)
    members = [Member(m, base) for m in params.panel]
    try:
        chosen = looper._plan(base, members, None, original_text(raw["messages"]))
    except StageFailure:
        return 0, False, False
    return len(chosen), looper.plan_judge, looper.plan_synthesis


def smallest_budget(config: Config, decision: str, raw: dict[str, Any], members: int) -> int:
    """The smallest ``max_total_tokens`` whose plan calls at least ``members`` panel members and still
    judges and synthesizes (monotonic in the budget, so a bisection finds it)."""
    lo, hi = 1, 1 << 20
    while lo < hi:
        mid = (lo + hi) // 2
        k, judge, synthesis = fusion_plan(config, decision, raw, mid)
        if judge and synthesis and k >= members:
            hi = mid
        else:
            lo = mid + 1
    return lo
