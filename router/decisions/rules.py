"""Evaluate AND / OR / NOT rule trees over matched signal leaves."""

from __future__ import annotations

from collections.abc import Iterator

from router.config.schema import RuleLeaf, RuleNode


def leaf_key(leaf: RuleLeaf) -> str:
    return f"{leaf.type}:{leaf.name}"


def leaves(rule: RuleNode | RuleLeaf | None) -> Iterator[str]:
    if rule is None:
        return
    if isinstance(rule, RuleLeaf):
        yield leaf_key(rule)
        return
    for cond in rule.conditions:
        yield from leaves(cond)


def evaluate(rule: RuleNode | RuleLeaf | None, matched: dict[str, float]) -> float | None:
    """Confidence of the rule (``None`` when it does not hold). AND takes the weakest condition, OR the
    strongest; NOT holds with full confidence when its condition does not."""
    if rule is None:
        return 0.0  # a catch-all holds, but with the least confidence, so real matches win ties
    if isinstance(rule, RuleLeaf):
        return matched.get(leaf_key(rule))
    if rule.operator == "NOT":
        return 1.0 if evaluate(rule.conditions[0], matched) is None else None
    scores = [evaluate(c, matched) for c in rule.conditions]
    held = [s for s in scores if s is not None]
    if rule.operator == "AND":
        return min(held) if len(held) == len(scores) else None
    return max(held) if held else None
