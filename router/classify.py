"""``fusion-router classify``: every configured signal's result and the decision that would win, as JSON."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from typing import Any

import orjson

from router.config import ConfigError, load_config
from router.decisions.policy import compile_policy
from router.decisions.selection.observed import OBSERVED
from router.decisions.selection.registry import SELECTIONS
from router.decisions.selection.spec import Candidate, SelectContext, Selection
from router.openai.tokens import prompt_tokens
from router.signals.base import SignalContext, TextTooLong
from router.signals.runner import matched_leaves, run_signals
from router.signals.runtime import build_runtime


async def classify(config_path: str, text: str, model: str | None = None) -> dict[str, Any]:
    config = load_config(config_path)
    runtime = build_runtime(config)
    policy = compile_policy(config, runtime=runtime)
    await policy.start()
    try:
        ctx = SignalContext.of_prompt(text)
        started = time.perf_counter()
        try:
            results = await run_signals(policy.signals.values(), ctx)  # all of them, not only the needed ones
        except TextTooLong as long:
            return {
                "too_long_to_check": {"signal": long.signal, "approx_tokens": long.approx_tokens, "token_budget": long.budget},
                "decision": None,
                "classifier_provider": getattr(runtime, "provider", None),
            }
        elapsed = (time.perf_counter() - started) * 1000
        name = model or config.global_.router.auto_model_names[0]
        choice = policy.entry_for(name)  # the same entry choice the pipeline makes
        if choice is None:
            raise ValueError(f"unknown model {name!r}")
        entry = choice.algorithm if choice.algorithm else str(choice.entry)
        match = choice.eligible.select(matched_leaves(results))
        selection = (
            _selection(policy, match.decision, text)
            if match and not match.decision.is_looper and match.decision.modelRefs
            else None
        )
        return {
            "entry": entry,
            "model": name,
            "decision": match.decision.name if match else None,
            "confidence": round(match.confidence, 4) if match else None,
            "algorithm": match.decision.algorithm.type if match else None,
            "route_to": (
                selection.model
                if selection is not None
                else (
                    match.decision.modelRefs[0].model
                    if match and match.decision.modelRefs
                    else (None if match else (choice.model or policy.default_model).name)
                )
            ),
            # How the selection algorithm chose among the modelRefs now (no session, no tenant).
            "selection": {"algorithm": selection.algorithm, "reason": selection.reason, "scores": dict(selection.scores)}
            if selection is not None
            else None,
            "signals": [r.as_dict() for r in results.values()],
            "signals_ms": round(elapsed, 3),
            "classifier_provider": getattr(runtime, "provider", None),
        }
    finally:
        if runtime is not None:
            await runtime.close()


def _selection(policy: Any, decision: Any, text: str) -> Selection:
    ctx = SelectContext(
        decision.name,
        tuple(Candidate(r.model, r.weight) for r in decision.modelRefs),
        policy.facts,
        OBSERVED,
        lambda: (prompt_tokens({"messages": [{"role": "user", "content": text}]}), None),
        random.Random(),
    )
    return SELECTIONS[decision.algorithm.type].select(decision.selection_settings, ctx)


def classify_command(args: argparse.Namespace) -> int:
    from router.observability.logging import configure_logging

    configure_logging("console", "warning")
    try:
        out = asyncio.run(classify(args.config, args.text, args.model))
    except ConfigError as err:
        print(str(err), file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - e.g. a missing model: say which, exit non-zero
        print(f"fusion-router classify: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0
