"""Rule trees, decision selection, per-path signal sets, the cheap signals and the signal runner."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from router.actions import Respond, Route
from router.app import App
from router.config import parse_config
from router.config.schema import (
    ContextSignal as ContextSpec,
)
from router.config.schema import (
    Decision,
    RuleLeaf,
    RuleNode,
    SignalCommon,
)
from router.config.schema import (
    KeywordSignal as KeywordSpec,
)
from router.config.schema import (
    LanguageSignal as LanguageSpec,
)
from router.decisions import rules
from router.decisions.policy import DecisionSet, compile_policy
from router.extproc.pipeline import handle
from router.signals.base import Signal, SignalContext, SignalResult
from router.signals.context import ContextSignal
from router.signals.keyword import KeywordSignal
from router.signals.language import LanguageSignal
from router.signals.runner import matched_leaves, run_signals
from router.state import Entry, RequestState, ResponsePath

# --------------------------------------------------------------------------- rule trees


def leaf(name: str, type: str = "keyword") -> RuleLeaf:
    return RuleLeaf(type=type, name=name)


def node(op: str, *conds) -> RuleNode:
    return RuleNode(operator=op, conditions=list(conds))


A, B, C = leaf("a"), leaf("b"), leaf("c")


def test_leaf_returns_its_confidence_or_none():
    assert rules.evaluate(A, {"keyword:a": 0.7}) == 0.7
    assert rules.evaluate(A, {"keyword:b": 0.7}) is None
    # The type is part of the key: a context signal named "a" is not keyword:a.
    assert rules.evaluate(A, {"context:a": 1.0}) is None


def test_and_takes_the_weakest_condition():
    rule = node("AND", A, B)
    assert rules.evaluate(rule, {"keyword:a": 0.9, "keyword:b": 0.4}) == 0.4
    assert rules.evaluate(rule, {"keyword:a": 0.9}) is None
    assert rules.evaluate(rule, {}) is None


def test_or_takes_the_strongest_condition():
    rule = node("OR", A, B, C)
    assert rules.evaluate(rule, {"keyword:a": 0.3, "keyword:c": 0.8}) == 0.8
    assert rules.evaluate(rule, {"keyword:b": 0.2}) == 0.2
    assert rules.evaluate(rule, {"keyword:z": 1.0}) is None


def test_not_inverts_with_full_confidence():
    rule = node("NOT", A)
    assert rules.evaluate(rule, {}) == 1.0
    assert rules.evaluate(rule, {"keyword:a": 0.1}) is None


def test_nested_trees():
    # (a AND NOT b) OR (c AND a)
    rule = node("OR", node("AND", A, node("NOT", B)), node("AND", C, A))
    assert rules.evaluate(rule, {"keyword:a": 0.6}) == 0.6  # min(a = 0.6, NOT b = 1.0)
    assert rules.evaluate(rule, {"keyword:a": 0.6, "keyword:b": 1.0}) is None
    assert rules.evaluate(rule, {"keyword:a": 0.6, "keyword:b": 1.0, "keyword:c": 0.9}) == 0.6
    assert rules.evaluate(rule, {"keyword:b": 1.0, "keyword:c": 0.9}) is None
    # NOT over an OR holds only when none of its branches does.
    guard = node("NOT", node("OR", A, B))
    assert rules.evaluate(guard, {"keyword:c": 1.0}) == 1.0
    assert rules.evaluate(guard, {"keyword:b": 0.01}) is None


def test_catch_all_holds_with_the_least_confidence():
    assert rules.evaluate(None, {}) == 0.0
    assert rules.evaluate(None, {"keyword:a": 1.0}) == 0.0


def test_leaves_lists_every_leaf_key():
    rule = node("OR", node("AND", A, leaf("long", "context")), node("NOT", leaf("en", "language")))
    assert list(rules.leaves(rule)) == ["keyword:a", "context:long", "language:en"]
    assert list(rules.leaves(None)) == []


# --------------------------------------------------------------------------- decision selection


def dec(name: str, priority: int = 0, rule=None, **extra) -> Decision:
    data = {"name": name, "priority": priority, "modelRefs": [{"model": "m1"}], **extra}
    if rule is not None:
        data["rules"] = rule.model_dump()
    return Decision.model_validate(data)


def ordered(*decisions: Decision) -> DecisionSet:
    # What Policy does: highest priority first, file order kept within a priority.
    return DecisionSet(sorted(decisions, key=lambda d: -d.priority), [])


def test_priority_beats_confidence():
    s = ordered(dec("low", 1, A), dec("high", 10, B))
    m = s.select({"keyword:a": 1.0, "keyword:b": 0.2})
    assert m is not None and m.decision.name == "high" and m.confidence == 0.2


def test_confidence_breaks_priority_ties():
    s = ordered(dec("first", 5, A), dec("second", 5, B))
    assert s.select({"keyword:a": 0.5, "keyword:b": 0.9}).decision.name == "second"
    assert s.select({"keyword:a": 0.9, "keyword:b": 0.5}).decision.name == "first"


def test_file_order_breaks_full_ties():
    s = ordered(dec("first", 5, A), dec("second", 5, B))
    assert s.select({"keyword:a": 0.7, "keyword:b": 0.7}).decision.name == "first"
    s = ordered(dec("second", 5, B), dec("first", 5, A))
    assert s.select({"keyword:a": 0.7, "keyword:b": 0.7}).decision.name == "second"


def test_lower_priority_match_when_higher_ones_fail():
    s = ordered(dec("high", 10, A), dec("mid", 5, B), dec("low", 1, C))
    assert s.select({"keyword:c": 1.0}).decision.name == "low"
    assert s.select({}) is None


def test_catch_all_loses_ties_to_real_matches_whatever_the_file_order():
    s = ordered(dec("general", 0), dec("specific", 0, A))
    m = s.select({"keyword:a": 1.0})
    assert m.decision.name == "specific" and m.confidence == 1.0
    m = s.select({})
    assert m.decision.name == "general" and m.confidence == 0.0
    # Even a zero-confidence real match beats the catch-all placed before it.
    assert s.select({"keyword:a": 0.0}).decision.name == "specific"


def test_catch_all_at_higher_priority_still_wins():
    s = ordered(dec("general", 10), dec("specific", 0, A))
    assert s.select({"keyword:a": 1.0}).decision.name == "general"


async def test_a_failed_signal_never_counts_as_a_match():
    # fail_closed refuses the request (the pipeline answers 503); it must never make a guard "match"
    # and accuse the user (an overloaded classifier once turned benign requests into 403s).
    sig = Boom(SignalCommon(name="a", on_error="fail_closed"))
    results = await run_signals([sig], ctx_of("hello"))
    assert not results["keyword:a"].matched and results["keyword:a"].error_reason == "error"
    s = ordered(dec("general", 0), dec("guard", 0, A, plugins=[{"type": "block"}]))
    assert s.select(matched_leaves(results)).decision.name == "general"


# --------------------------------------------------------------------------- per-path signal sets

POLICY_CFG = {
    "backends": [{"name": "b1", "endpoint": "http://127.0.0.1:9"}],
    "models": [{"name": "m1", "backend": "b1"}, {"name": "m2", "backend": "b1"}],
    "routing": {
        "signals": {
            "keywords": [
                {"name": "kw_static", "keywords": ["alpha"]},
                {"name": "kw_fusion", "keywords": ["deliberate"]},
                {"name": "kw_guard", "keywords": ["forbidden"]},
                {"name": "kw_unused", "keywords": ["nobody"]},
            ],
            "context": [{"name": "long", "min_tokens": 1000}],
        },
        "decisions": [
            {"name": "general", "modelRefs": [{"model": "m1"}]},
            {
                "name": "static",
                "priority": 10,
                "rules": {
                    "operator": "AND",
                    "conditions": [
                        {"type": "keyword", "name": "kw_static"},
                        {"operator": "NOT", "conditions": [{"type": "context", "name": "long"}]},
                    ],
                },
                "modelRefs": [{"model": "m2"}],
            },
            {
                "name": "fused",
                "priority": 20,
                "rules": {"type": "keyword", "name": "kw_fusion"},
                "modelRefs": [{"model": "m1"}, {"model": "m2"}],
                "algorithm": {"type": "fusion"},
            },
            {
                "name": "guard",
                "priority": 5,
                "rules": {"type": "keyword", "name": "kw_guard"},
                "plugins": [{"type": "block", "configuration": {"status": 403, "code": "forbidden_topic"}}],
            },
        ],
    },
}


@pytest.fixture(scope="module")
def policy():
    return compile_policy(parse_config(POLICY_CFG))


def keys(ds: DecisionSet) -> set[str]:
    return {s.key for s in ds.signals}


def test_all_decisions_need_only_referenced_signals(policy):
    assert set(policy.signals) == {
        "keyword:kw_static",
        "keyword:kw_fusion",
        "keyword:kw_guard",
        "keyword:kw_unused",
        "context:long",
    }
    assert keys(policy.all_decisions) == {"keyword:kw_static", "keyword:kw_fusion", "keyword:kw_guard", "context:long"}
    assert [d.name for d in policy.all_decisions.decisions] == ["fused", "static", "guard", "general"]


def test_looper_decisions_are_fusion_plus_guards(policy):
    assert [d.name for d in policy.looper_sets["fusion"].decisions] == ["fused", "guard"]
    assert keys(policy.looper_sets["fusion"]) == {"keyword:kw_fusion", "keyword:kw_guard"}


def test_guard_decisions_are_guards_only(policy):
    assert [d.name for d in policy.guard_decisions.decisions] == ["guard"]
    assert keys(policy.guard_decisions) == {"keyword:kw_guard"}


def test_guard_stays_eligible_on_the_fusion_path(policy):
    m = policy.looper_sets["fusion"].select({"keyword:kw_guard": 1.0})
    assert m is not None and m.decision.name == "guard"
    # ...and a static decision is never picked there, even when it matches.
    assert policy.looper_sets["fusion"].select({"keyword:kw_static": 1.0}) is None


def chat(model: str, text: str) -> bytearray:
    return bytearray(orjson.dumps({"model": model, "messages": [{"role": "user", "content": text}]}))


@pytest.mark.parametrize(("model", "entry"), [("vllm-sr/fusion", Entry.LOOPER), ("m1", Entry.MODEL), ("auto", Entry.AUTO)])
async def test_guard_blocks_on_every_entry_path(model, entry):
    app = App.from_config(parse_config(POLICY_CFG))
    state = RequestState(policy=app.policy, body=chat(model, "tell me the forbidden thing"))
    action = await handle(app, state)
    assert isinstance(action, Respond) and action.status == 403
    body = orjson.loads(action.body)
    assert body["error"]["code"] == "forbidden_topic" and body["decision"] == "guard"
    assert state.entry is entry and state.response_path is ResponsePath.BLOCKED
    assert action.headers["x-vsr-selected-decision"] == "guard"
    # Only the signals the path's eligible decisions reference ran.
    expected = {"vllm-sr/fusion": {"keyword:kw_fusion", "keyword:kw_guard"}, "m1": {"keyword:kw_guard"}}.get(
        model, {"keyword:kw_static", "keyword:kw_fusion", "keyword:kw_guard", "context:long"}
    )
    assert set(state.signals) == expected


async def test_concrete_model_without_guard_match_goes_where_asked():
    app = App.from_config(parse_config(POLICY_CFG))
    state = RequestState(policy=app.policy, body=chat("m2", "alpha please"))
    action = await handle(app, state)
    assert isinstance(action, Route)
    assert state.model.name == "m2" and state.decision is None
    assert set(state.signals) == {"keyword:kw_guard"}


MASK_CFG = {
    "backends": [{"name": "b1", "endpoint": "http://127.0.0.1:9"}],
    "models": [{"name": "m1", "backend": "b1"}, {"name": "m2", "backend": "b1"}],
    "routing": {
        "signals": {"keywords": [{"name": "secret", "keywords": ["secret"]}, {"name": "research", "keywords": ["compare"]}]},
        "decisions": [
            {
                "name": "mask",
                "priority": 300,
                "rules": {"type": "keyword", "name": "secret"},
                "modelRefs": [{"model": "m1"}],
                "plugins": [{"type": "pii_mask"}],
            },
            {
                "name": "fused",
                "priority": 200,
                "rules": {"type": "keyword", "name": "research"},
                "modelRefs": [{"model": "m1"}, {"model": "m2"}],
                "algorithm": {"type": "fusion"},
            },
        ],
    },
}


async def test_mask_guard_is_eligible_on_the_fusion_path():
    app = App.from_config(parse_config(MASK_CFG))
    assert [d.name for d in app.policy.looper_sets["fusion"].decisions] == ["fused"]
    assert [d.name for d in app.policy.looper_sets["fusion"].masks] == ["mask"]
    assert keys(app.policy.looper_sets["fusion"]) == {"keyword:secret", "keyword:research"}
    assert keys(app.policy.guard_decisions) == {"keyword:secret"}
    await app.close()


async def test_fusion_slug_with_a_mask_guard_match_still_fuses():
    from router.actions import Stream

    app = App.from_config(parse_config(MASK_CFG))
    body = orjson.dumps(
        {"model": "vllm-sr/fusion", "stream": True, "messages": [{"role": "user", "content": "compare the secret plans"}]}
    )
    state = RequestState(policy=app.policy, body=bytearray(body))
    action = await handle(app, state)
    try:
        assert isinstance(action, Stream), getattr(action, "body", action)
        assert state.response_path is ResponsePath.LOOPER and state.path_label == "fusion"
    finally:
        if isinstance(action, Stream):
            await action.chunks.aclose()  # never started: no upstream call is made
        await app.close()


# --------------------------------------------------------------------------- keyword signal


def ctx_of(text: str) -> SignalContext:
    return SignalContext.of_prompt(text)


def kw(keywords, **kwargs) -> KeywordSignal:
    return KeywordSignal(KeywordSpec(name="k", keywords=keywords, **kwargs))


def hit(sig: KeywordSignal, text: str) -> bool:
    return sig.evaluate_now(ctx_of(text)).matched


@pytest.mark.parametrize(
    ("operator", "text", "expected"),
    [
        ("any", "I like python", True),
        ("any", "I like rust and python", True),
        ("any", "I like java", False),
        ("all", "rust and python", True),
        ("all", "only python here", False),
        ("none", "I like java", True),
        ("none", "I like rust", False),
        ("OR", "rust", True),
        ("AND", "python only", False),
        ("NOR", "python", False),
    ],
)
def test_keyword_operators(operator, text, expected):
    assert hit(kw(["python", "rust"], operator=operator), text) is expected


def test_keyword_word_vs_substring():
    word, sub = kw(["python"], method="word"), kw(["python"], method="substring")
    assert hit(word, "python is fun") and hit(sub, "python is fun")
    assert not hit(word, "a pythonic idiom") and hit(sub, "a pythonic idiom")
    assert not hit(word, "cpython internals") and hit(sub, "cpython internals")
    assert hit(word, "(python)") and hit(word, "python.")


def test_keyword_regex_method():
    sig = kw([r"\bv\d+\.\d+\b", r"^hello"], method="regex")
    assert hit(sig, "upgrade to v1.40 today")
    assert hit(sig, "hello there")
    assert not hit(sig, "say hello")
    assert not hit(sig, "version one")


def test_keyword_word_method_escapes_regex_metacharacters():
    sig = kw(["a.b"], method="word")
    assert hit(sig, "use a.b here")
    assert not hit(sig, "use axb here")


def test_keyword_case_sensitivity():
    assert hit(kw(["SQL"]), "write some sql")
    strict = kw(["SQL"], case_sensitive=True)
    assert hit(strict, "write some SQL")
    assert not hit(strict, "write some sql")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I write c++ daily", True),
        ("c++", True),
        ("C++ templates", True),
        ("c# and c++.", True),
        ("abc++ is not it", False),
        ("plain c code", False),
        ("cpp files", False),
    ],
)
def test_keyword_with_non_word_characters(text, expected):
    assert hit(kw(["c++", "c#"]), text) is expected


def test_keyword_multi_word_phrase():
    sig = kw(["stack trace"])
    assert hit(sig, "here is my Stack Trace:")
    assert not hit(sig, "a stack of traces")


def test_keyword_reads_only_the_last_user_message():
    sig = kw(["python"])
    ctx = SignalContext.of_user_turns("write python", "and now in go?")
    assert not sig.evaluate_now(ctx).matched


def test_keyword_all_reports_what_was_found():
    res = kw(["python", "rust"], operator="all").evaluate_now(ctx_of("rust then python"))
    assert res.matched and sorted(res.detail["found"]) == ["python", "rust"]


# --------------------------------------------------------------------------- context signal


def text_of_tokens() -> str:
    # 300 four-letter words: words * 4/3 = 400 estimated tokens (more than chars // 4 = 374).
    return " ".join(["word"] * 300)


def test_context_token_estimate():
    assert ctx_of(text_of_tokens()).approx_tokens == 400
    assert ctx_of("x" * 4000).approx_tokens == 1000  # one long word: the character estimate wins


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [(0, None, True), (100, 500, True), (400, 400, True), (401, None, False), (0, 399, False), (1, 10, False)],
)
def test_context_ranges(lo, hi, expected):
    sig = ContextSignal(ContextSpec(name="c", min_tokens=lo, max_tokens=hi))
    res = sig.evaluate_now(ctx_of(text_of_tokens()))
    assert res.matched is expected
    assert res.detail == {"tokens": 400}


# --------------------------------------------------------------------------- language signal

PROMPTS = {
    "en": "What is the capital of France and why is it famous?",
    "fr": "Quelle est la capitale de la France et pourquoi est-elle célèbre ?",
    "es": "¿Cuál es la capital de Francia y por qué es famosa?",
    "zh": "法国的首都是哪里？它为什么有名？",
}


@pytest.mark.parametrize("lang", sorted(PROMPTS))
def test_language_identifies_clear_prompts(lang):
    sig = LanguageSignal(LanguageSpec(name=lang, languages=[lang.upper()]))
    for other, text in PROMPTS.items():
        res = sig.evaluate_now(ctx_of(text))
        assert res.detail["language"] == other
        assert res.matched is (other == lang), (lang, other)


def test_language_min_confidence_and_empty_text():
    text = PROMPTS["fr"]
    prob = LanguageSignal(LanguageSpec(name="x", languages=["fr"])).evaluate_now(ctx_of(text)).confidence
    assert 0.5 < prob <= 1.0
    strict = LanguageSignal(LanguageSpec(name="x", languages=["fr"], min_confidence=1.0))
    if prob < 1.0:
        assert not strict.evaluate_now(ctx_of(text)).matched
    empty = LanguageSignal(LanguageSpec(name="x", languages=["en"])).evaluate_now(ctx_of("   "))
    assert not empty.matched and empty.detail == {"language": None}


def test_language_detection_is_shared_through_the_request_cache():
    ctx = ctx_of(PROMPTS["es"])
    en = LanguageSignal(LanguageSpec(name="en", languages=["en"]))
    es = LanguageSignal(LanguageSpec(name="es", languages=["es"]))
    assert not en.evaluate_now(ctx).matched
    assert ctx.cache["language"][0] == "es"
    ctx.cache["language"] = ("en", 0.99)  # the second signal must read the cache, not re-detect
    assert not es.evaluate_now(ctx).matched


# --------------------------------------------------------------------------- runner


class Slow(Signal):
    type = "keyword"
    cheap = False

    def __init__(self, spec: SignalCommon, delay: float):
        super().__init__(spec)
        self.delay = delay

    async def evaluate(self, ctx: SignalContext) -> SignalResult:
        await asyncio.sleep(self.delay)
        return SignalResult(self.type, self.name, True, 0.8)

    def describe(self) -> str:
        return "slow"


class Boom(Signal):
    type = "keyword"
    cheap = False

    async def evaluate(self, ctx: SignalContext) -> SignalResult:
        raise RuntimeError("model exploded")

    def describe(self) -> str:
        return "boom"


class CheapBoom(Signal):
    type = "context"

    def evaluate_now(self, ctx: SignalContext) -> SignalResult:
        raise ValueError("bad input")

    def describe(self) -> str:
        return "cheap boom"


@pytest.mark.parametrize("policy_", ["skip", "fail_closed"])
async def test_slow_signal_over_budget(policy_):
    sig = Slow(SignalCommon(name="slow", timeout_ms=30, on_error=policy_), delay=60.0)
    results = await run_signals([sig], ctx_of("x"))  # returns: the budget cut the 60 s signal short
    res = results["keyword:slow"]
    assert res.error is not None and "timed out" in res.error and res.error_reason == "timeout"
    assert not res.matched and res.confidence == 0.0
    assert "keyword:slow" not in matched_leaves(results)


async def test_the_request_deadline_caps_a_signal_budget():
    sig = Slow(SignalCommon(name="slow", timeout_ms=60_000), delay=60.0)
    res = (await run_signals([sig], ctx_of("x"), budget_s=0.02))["keyword:slow"]
    assert res.error_reason == "timeout" and "timed out after 20 ms" in res.error


async def test_slow_signal_within_budget():
    sig = Slow(SignalCommon(name="slow", timeout_ms=1000), delay=0.01)
    res = (await run_signals([sig], ctx_of("x")))["keyword:slow"]
    assert res.error is None and res.matched and res.confidence == 0.8


@pytest.mark.parametrize("policy_", ["skip", "fail_closed"])
async def test_raising_signal(policy_):
    results = await run_signals(
        [Boom(SignalCommon(name="boom", on_error=policy_)), CheapBoom(SignalCommon(name="cheap", on_error=policy_))],
        ctx_of("x"),
    )
    for key, text in (("keyword:boom", "RuntimeError: model exploded"), ("context:cheap", "ValueError: bad input")):
        assert results[key].error == text
        assert not results[key].matched


class Rendezvous(Signal):
    """Matches only once every sibling has started: proves the signals run concurrently, not in turn."""

    type = "keyword"
    cheap = False

    def __init__(self, spec: SignalCommon, barrier: asyncio.Barrier):
        super().__init__(spec)
        self.barrier = barrier

    async def evaluate(self, ctx: SignalContext) -> SignalResult:
        await self.barrier.wait()
        return SignalResult(self.type, self.name, True, 0.8)

    def describe(self) -> str:
        return "rendezvous"


async def test_slow_signals_run_concurrently_with_a_failing_one():
    barrier = asyncio.Barrier(3)
    sigs: list[Signal] = [Rendezvous(SignalCommon(name=f"s{i}", timeout_ms=30_000), barrier) for i in range(3)]
    sigs.append(Boom(SignalCommon(name="boom")))
    sigs.append(KeywordSignal(KeywordSpec(name="kw", keywords=["x"])))
    results = await run_signals(sigs, ctx_of("x"))
    assert set(results) == {"keyword:s0", "keyword:s1", "keyword:s2", "keyword:boom", "keyword:kw"}
    assert matched_leaves(results) == {"keyword:s0": 0.8, "keyword:s1": 0.8, "keyword:s2": 0.8, "keyword:kw": 1.0}
