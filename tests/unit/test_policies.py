"""Session continuity, tenant policy and token budgets in-process (the pipeline against the simulator,
no Envoy): session keys and stores, affinity kept / overridden / returning after an escalation,
tenants identified and refused, per-tenant tokens per minute, and looper budgets that cut a run
short and say so, proven by what the simulated backends were asked."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from router.actions import Route
from router.app import App
from router.config import ConfigError, parse_config
from router.extproc import pipeline
from router.looper.budget import TokenBudget
from router.looper.messages import final_body, subcall_body
from router.looper.registry import ALGORITHMS
from router.openai.errors import OpenAIError
from router.sessions.keys import session_key, validate_header
from router.sessions.settings import SessionSettings
from router.sessions.store import MemoryStore, Pinned
from router.sim import SimBackendSpec, running_backends
from router.state import RequestState
from router.tenants.identify import identify
from router.tenants.settings import TenantSettings
from router.tenants.tokens import MemoryWindow, retry_after
from tests.unit.budget_plan import fusion_plan, smallest_budget

KEY = "sk-acme-0123456789"
DIGEST = hashlib.sha256(KEY.encode()).hexdigest()


# --------------------------------------------------------------------------- session keys and stores


def test_session_key_sources_in_order_scoped_by_tenant_and_hashed():
    s = SessionSettings()
    raw = {
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "user": "u-1",
        "metadata": {"session_id": "conv-9"},
    }
    k = session_key(s, {"x-session-id": "abc"}, raw, None)
    assert k is not None and k.source == "header" and "abc" not in k.digest and len(k.digest) == 64
    assert session_key(s, {}, raw, None).source == "metadata"
    assert session_key(s, {}, {**raw, "metadata": {}}, None).source == "user"
    first = session_key(s, {}, {"messages": raw["messages"]}, None)
    later = session_key(
        s,
        {},
        {"messages": [*raw["messages"], {"role": "assistant", "content": "hello"}, {"role": "user", "content": "more"}]},
        None,
    )
    assert first.source == "first_turns" and first.digest == later.digest  # the same conversation on every turn
    assert session_key(s, {"x-session-id": "abc"}, raw, "acme").digest != k.digest  # tenants never share sessions
    assert session_key(SessionSettings(key_from=["header"]), {}, raw, None) is None


@pytest.mark.parametrize("value", ["x" * 257, "has space", "caf\xe9", "\x00bin"])
def test_a_huge_or_binary_session_id_is_a_400(value):
    with pytest.raises(OpenAIError) as err:
        validate_header(SessionSettings(), {"x-session-id": value})
    assert err.value.status == 400 and err.value.code == "invalid_session_id" and err.value.param == "x-session-id"
    with pytest.raises(OpenAIError) as err:
        session_key(SessionSettings(), {}, {"metadata": {"session_id": value}}, None)
    assert err.value.param == "metadata.session_id"


async def test_memory_store_expires_and_evicts_least_recent(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("router.sessions.store.time.monotonic", lambda: now[0])
    store = MemoryStore(ttl_seconds=10, max_entries=2)
    await store.put("a", Pinned("m1", "d", 1))
    await store.put("b", Pinned("m2", "d", 1))
    assert (await store.get("a")).model == "m1"  # a is now the most recent
    await store.put("c", Pinned("m3", "d", 1))
    assert await store.get("b") is None and len(store) == 2
    now[0] += 9
    assert (await store.get("a")).model == "m1"  # reading refreshes the TTL
    now[0] += 9.5
    assert (await store.get("a")).model == "m1" and await store.get("c") is None


# --------------------------------------------------------------------------- in-process stacks

SIMS = {"small": {}, "medium": {}, "large": {}, "judge": {"mode": "judge_json"}}


@pytest.fixture
async def sims() -> AsyncIterator[dict[str, Any]]:
    specs = [SimBackendSpec(name=f"b-{n}", models=[n], **knobs) for n, knobs in SIMS.items()]
    async with running_backends(specs) as backends:
        yield {b.name.removeprefix("b-"): b for b in backends}


def config(sims: dict[str, Any], decisions: list[dict[str, Any]], **global_: Any) -> dict[str, Any]:
    return {
        "global": {"integrations": {"looper": {"timeout_seconds": 10}}, **global_},
        "backends": [{"name": f"b-{n}", "endpoint": f"http://127.0.0.1:{b.port}"} for n, b in sims.items()],
        "models": [{"name": n, "backend": f"b-{n}"} for n in sims],
        "default_model": "small",
        "routing": {
            "signals": {
                "keywords": [{"name": kw, "keywords": [kw]} for kw in ("urgent", "attack", "fuse")],
                "tenants": [{"name": "paid", "tenants": ["acme"]}],
            },
            "decisions": decisions,
        },
    }


CHAT = {
    "name": "chat",
    "priority": 10,
    "modelRefs": [{"model": "small"}, {"model": "medium"}],
    "algorithm": {"type": "weighted"},
    "session_affinity": True,
}
URGENT = {
    "name": "urgent",
    "priority": 20,
    "rules": {"type": "keyword", "name": "urgent"},
    "modelRefs": [{"model": "large"}],
    "session_affinity": True,
}
BLOCK = {
    "name": "guard",
    "priority": 100,
    "rules": {"type": "keyword", "name": "attack"},
    "plugins": [{"type": "block", "configuration": {"status": 403}}],
}


async def ask(
    app: App, text: str | list[dict[str, Any]], model: str = "auto", headers: dict[str, str] | None = None, **body: Any
) -> tuple[RequestState, Any]:
    messages = [{"role": "user", "content": text}] if isinstance(text, str) else text
    raw = {"model": model, "messages": messages, **body}
    state = RequestState(policy=app.policy, body=bytearray(orjson.dumps(raw)), headers=dict(headers or {}), request_id="t")
    return state, await pipeline.handle(app, state)


async def test_a_conversation_keeps_its_model_across_turns(sims):
    app = App.from_config(parse_config(config(sims, [URGENT, CHAT])))
    pipeline._RNG.seed(3)
    chosen = {}
    for conv in range(12):
        models = set()
        for turn in range(4):
            state, action = await ask(app, f"turn {turn}", headers={"x-session-id": f"conv-{conv}"})
            assert isinstance(action, Route)
            models.add(state.model.name)
            algorithm = "weighted" if turn == 0 else "session"
            assert action.set_headers["x-vsr-selection"].startswith(f"{algorithm}:")
        assert len(models) == 1, models  # every turn on the model of the first
        chosen[conv] = models.pop()
    assert set(chosen.values()) == {"small", "medium"}  # different conversations were drawn differently
    await app.close()


async def test_a_higher_priority_decision_overrides_and_a_block_leaves_the_session_alone(sims):
    app = App.from_config(parse_config(config(sims, [BLOCK, URGENT, CHAT])))
    h = {"x-session-id": "conv-x"}
    state, _ = await ask(app, "hello", headers=h)
    first = state.model.name
    state, action = await ask(app, "this is urgent", headers=h)
    assert state.model.name == "large" and "outranks chat" in action.set_headers["x-vsr-selection"]
    state, action = await ask(app, "an attack", headers=h)
    assert action.status == 403  # the guard answered this turn; the session was not touched
    state, action = await ask(app, "back to chatting", headers=h)
    # chat (priority 10) does not outrank urgent (20), which pinned large: the conversation stays there.
    assert state.model.name == "large" and action.set_headers["x-vsr-selection"].startswith("session: kept large")
    assert first in ("small", "medium")
    await app.close()


async def test_without_affinity_or_key_every_turn_is_drawn_again(sims):
    app = App.from_config(parse_config(config(sims, [URGENT, {**CHAT, "session_affinity": False}])))
    pipeline._RNG.seed(5)
    seen = {(await ask(app, "hi", headers={"x-session-id": "same"}))[0].model.name for _ in range(30)}
    assert seen == {"small", "medium"}
    app2 = App.from_config(parse_config(config(sims, [URGENT, CHAT], sessions={"key_from": ["header"]})))
    seen = {(await ask(app2, "hi"))[0].model.name for _ in range(30)}
    assert seen == {"small", "medium"}  # no session id: nothing to keep
    _, action = await ask(app2, "hi", headers={"x-session-id": "bad id with spaces"})
    assert action.status == 400 and orjson.loads(action.body)["error"]["code"] == "invalid_session_id"
    await app.close()
    await app2.close()


def test_session_affinity_on_a_looper_decision_is_a_config_error(sims):
    fused = {
        "name": "f",
        "modelRefs": [{"model": "small"}],
        "algorithm": {"type": "fusion", "fusion": {"model": "judge"}},
        "session_affinity": True,
    }
    with pytest.raises(ConfigError) as err:
        parse_config(config(sims, [fused]))
    assert err.value.problems == [
        (
            "routing.decisions[0].session_affinity: a looper decision runs several models; "
            "session affinity pins the model of routing decisions only"
        )
    ]
    with pytest.raises(ConfigError) as err:
        parse_config(config(sims, [CHAT], sessions={"store": "redis"}))
    assert err.value.problems == ["global.sessions.store: redis needs global.redis (address: host:port)"]


# --------------------------------------------------------------------------- tenants


TENANTS = {
    "api_keys": [{"sha256": DIGEST, "tenant": "acme"}],
    "policies": [
        {"name": "acme", "models": ["small", "medium", "judge"], "loopers": ["fusion"]},
        {"name": "beta", "models": ["large"], "loopers": []},
    ],
}


def test_tenant_identification():
    t = TenantSettings.model_validate(TENANTS)
    assert identify(t, {"authorization": f"Bearer {KEY}"}) == "acme"
    assert identify(t, {"authorization": "Bearer other"}) is None
    assert identify(t, {"x-vsr-tenant": "beta", "authorization": f"Bearer {KEY}"}) == "beta"  # Envoy's header wins
    for headers, status, code in (
        ({"x-vsr-tenant": "nobody"}, 403, "unknown_tenant"),
        ({"x-vsr-tenant": "bad name!"}, 400, "invalid_tenant"),
    ):
        with pytest.raises(OpenAIError) as err:
            identify(t, headers)
        assert (err.value.status, err.value.code) == (status, code)
    strict = TenantSettings.model_validate({**TENANTS, "require_tenant": True})
    with pytest.raises(OpenAIError) as err:
        identify(strict, {})
    assert err.value.status == 401
    assert identify(TenantSettings.model_validate({**TENANTS, "default_tenant": "beta"}), {}) == "beta"


@pytest.mark.parametrize(
    ("digest", "fragment"),
    [("abc", "expected a sha256 digest"), ("g" * 64, "expected a sha256 digest"), (DIGEST + "0", "expected a sha256 digest")],
)
def test_a_malformed_digest_is_a_config_error_naming_the_field(sims, digest, fragment):
    with pytest.raises(ConfigError) as err:
        parse_config(config(sims, [CHAT], tenants={"api_keys": [{"sha256": digest, "tenant": "acme"}]}))
    [problem] = err.value.problems
    assert problem.startswith("global.tenants.api_keys[0].sha256:") and fragment in problem


def test_tenant_config_cross_checks(sims):
    bad = {"policies": [{"name": "acme", "models": ["nope"], "loopers": ["ratings"]}]}
    with pytest.raises(ConfigError) as err:
        parse_config(config(sims, [CHAT], tenants=bad))
    assert err.value.problems == [
        "global.tenants.policies[0].models[0]: unknown model 'nope' (expected one of ['judge', 'large', 'medium', 'small'])",
        f"global.tenants.policies[0].loopers[0]: unknown looper algorithm 'ratings' (expected one of {sorted(ALGORITHMS)})",
    ]
    fused = {
        "name": "f",
        "modelRefs": [{"model": "small"}],
        "algorithm": {"type": "fusion", "fusion": {"model": "judge", "max_completion_tokens": 500}},
    }
    with pytest.raises(ConfigError) as err:
        parse_config(config(sims, [fused], tenants={"policies": [{"name": "acme", "tokens_per_minute": 100}]}))
    assert err.value.problems == [
        (
            "global.tenants.policies[0].tokens_per_minute: 100 is below one call's max_completion_tokens "
            "(500) of routing.decisions[0] ('f'); no request of that decision could ever fit"
        )
    ]


async def test_a_tenant_is_refused_models_and_loopers_it_may_not_use(sims):
    fused = {
        "name": "fused",
        "priority": 50,
        "rules": {"type": "keyword", "name": "fuse"},
        "modelRefs": [{"model": "small"}, {"model": "medium"}],
        "algorithm": {"type": "fusion", "fusion": {"model": "judge"}},
    }
    app = App.from_config(parse_config(config(sims, [fused, URGENT, CHAT], tenants=TENANTS)))
    acme = {"authorization": f"Bearer {KEY}"}
    _, action = await ask(app, "hi", model="large", headers=acme)
    body = orjson.loads(action.body)
    assert action.status == 403 and body["error"]["code"] == "model_not_allowed" and "`large`" in body["error"]["message"]
    assert body["error"]["param"] == "model" and not sims["large"].requests
    # auto: the urgent decision (large only) is passed over for acme; chat serves it
    state, action = await ask(app, "urgent please", headers=acme)
    assert isinstance(action, Route) and state.decision.name == "chat" and state.model.name in ("small", "medium")
    # beta may use large only and no loopers
    beta = {"x-vsr-tenant": "beta"}
    state, action = await ask(app, "urgent please", headers=beta)
    assert isinstance(action, Route) and state.model.name == "large"
    _, action = await ask(app, "hi", model="vllm-sr/fusion", headers=beta)
    assert action.status == 403 and orjson.loads(action.body)["error"]["code"] == "looper_not_allowed"
    _, action = await ask(app, "hi", headers=beta)  # chat's models are not beta's, and the default model neither
    err = orjson.loads(action.body)["error"]
    assert action.status == 403 and err["code"] == "model_not_allowed" and "default model `small`" in err["message"]
    # acme's fusion plugin naming a model it may not use: 403 before any call
    _, action = await ask(
        app, "hi", model="small", headers=acme, plugins=[{"id": "fusion", "analysis_models": ["small", "large"]}]
    )
    assert action.status == 403 and "`large`" in orjson.loads(action.body)["error"]["message"]
    assert not sims["large"].requests
    await app.close()


async def test_the_tenant_signal_routes_by_tenant(sims):
    paid = {"name": "paid", "priority": 30, "rules": {"type": "tenant", "name": "paid"}, "modelRefs": [{"model": "medium"}]}
    app = App.from_config(parse_config(config(sims, [paid, {**CHAT, "modelRefs": [{"model": "small"}]}], tenants=TENANTS)))
    state, _ = await ask(app, "hi", headers={"authorization": f"Bearer {KEY}"})
    assert state.decision.name == "paid" and state.model.name == "medium"
    state, _ = await ask(app, "hi")
    assert state.decision.name == "chat" and state.model.name == "small"
    await app.close()


# --------------------------------------------------------------------------- tenant tokens per minute


def test_retry_after_waits_for_enough_of_the_window():
    # 60 s window: buckets at t=100 (50 tokens) and t=130 (40); limit 100, used 90, cost 30 → 20 must expire:
    # the t=100 bucket expires at 160 → 60 s from now=100... measured from now=140: 20 s.
    assert retry_after([(130, 40), (100, 50)], 90, 30, 100, 140) == 20
    assert retry_after([(100, 5), (130, 85)], 90, 30, 100, 140) == 50


async def test_memory_window_admits_until_the_limit(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("router.tenants.tokens.time.time", lambda: now[0])
    w = MemoryWindow()
    assert (await w.admit("t", 60, 100)).admitted
    now[0] += 10
    v = await w.admit("t", 50, 100)
    assert not v.admitted and v.used == 60 and v.retry_after == 50
    now[0] += 50
    assert (await w.admit("t", 50, 100)).admitted  # the first request left the window


async def test_tenant_tokens_per_minute_answers_429_with_retry_after(sims):
    tenants = {**TENANTS, "policies": [{"name": "acme", "tokens_per_minute": 120}]}
    app = App.from_config(parse_config(config(sims, [CHAT], tenants=tenants)))
    acme = {"authorization": f"Bearer {KEY}"}
    codes = []
    for _ in range(4):
        _, action = await ask(app, "a short question", headers=acme, max_completion_tokens=40)
        codes.append(getattr(action, "status", 200))
        last = action
    assert codes[:2] == [200, 200] and codes[2:] == [429, 429]
    err = orjson.loads(last.body)["error"]
    assert err["code"] == "tenant_rate_limited" and err["type"] == "rate_limit_error"
    assert 1 <= int(last.headers["retry-after"]) <= 60
    _, action = await ask(app, "x " * 10, headers=acme, max_completion_tokens=500)
    assert action.status == 413 and orjson.loads(action.body)["error"]["code"] == "request_exceeds_token_budget"
    _, action = await ask(app, "other tenants are not counted")
    assert isinstance(action, Route)
    await app.close()


# --------------------------------------------------------------------------- looper token budgets


def fusion_decision(**settings: Any) -> dict[str, Any]:
    return {
        "name": "fused",
        "priority": 50,
        "rules": {"type": "keyword", "name": "fuse"},
        "modelRefs": [{"model": "small"}, {"model": "medium"}, {"model": "large"}],
        "algorithm": {"type": "fusion", "fusion": {"model": "judge", "max_completion_tokens": 24, **settings}},
    }


def calls(sims: dict[str, Any]) -> dict[str, int]:
    return {n: len([r for r in b.requests if r["path"] == "/v1/chat/completions"]) for n, b in sims.items()}


async def test_a_budget_cuts_a_fusion_panel_short_and_says_so(sims):
    data = config(sims, [fusion_decision()])
    raw = {"model": "auto", "messages": [{"role": "user", "content": "fuse these thoughts"}]}
    full = smallest_budget(parse_config(data), "fused", raw, 3)
    two = smallest_budget(parse_config(data), "fused", raw, 2)
    assert two < full and fusion_plan(parse_config(data), "fused", raw, full - 1)[:2] == (2, True)
    limit = full - 1
    app = App.from_config(parse_config(config(sims, [fusion_decision(max_total_tokens=limit)])))
    _, action = await ask(app, "fuse these thoughts")
    body = orjson.loads(action.body)
    trace = body["fusion"]
    assert action.status == 200 and trace["budget"]["budget_exhausted"] is True
    [cut] = trace["budget"]["cuts"]
    assert cut["stage"] == "panel" and "called 2 of 3 panel members (large not called" in cut["detail"]
    assert calls(sims) == {"small": 1, "medium": 1, "large": 0, "judge": 2}  # judge + synthesis still ran
    assert trace["analysis_status"] == "ok" and trace["outcome"] == "fused"
    assert body["usage"]["total_tokens"] == trace["budget"]["spent_tokens"] <= limit
    assert action.headers["x-vsr-looper-budget"] == f"spent={body['usage']['total_tokens']}; max={limit}; exhausted"
    # A roomy budget: nothing cut. (The simulated judge writes its analysis whatever the cap, so the
    # planned threshold itself can end with the synthesis skipped at the re-check: the run then says so.)
    for b in sims.values():
        b.clear_requests()
    app2 = App.from_config(parse_config(config(sims, [fusion_decision(max_total_tokens=3 * full)])))
    _, action = await ask(app2, "fuse these thoughts")
    trace = orjson.loads(action.body)["fusion"]
    assert trace["budget"] == {
        "max_total_tokens": 3 * full,
        "spent_tokens": trace["budget"]["spent_tokens"],
        "budget_exhausted": False,
        "cuts": [],
    }
    assert calls(sims) == {"small": 1, "medium": 1, "large": 1, "judge": 2}
    await app.close()
    await app2.close()


async def test_a_tiny_budget_answers_with_a_panel_answer_or_refuses(sims):
    data = config(sims, [fusion_decision()])
    raw = {"model": "auto", "messages": [{"role": "user", "content": "fuse now"}]}
    two = smallest_budget(parse_config(data), "fused", raw, 2)
    member = TokenBudget.cost(subcall_body(raw, max_completion_tokens=24))  # one panel call's worst case
    tight = 2 * member - 1
    assert fusion_plan(parse_config(data), "fused", raw, tight) == (1, False, False) and tight < two
    app = App.from_config(parse_config(config(sims, [fusion_decision(max_total_tokens=tight)])))
    _, action = await ask(app, "fuse now")
    body = orjson.loads(action.body)
    assert action.status == 200 and body["fusion"]["outcome"] == "panel_answer"
    assert [c["stage"] for c in body["fusion"]["budget"]["cuts"]] == ["judge", "synthesis", "panel"]
    assert calls(sims) == {"small": 1, "medium": 0, "large": 0, "judge": 0}
    assert body["choices"][0]["message"]["content"].startswith("[small@b-small]")
    app2 = App.from_config(parse_config(config(sims, [fusion_decision(max_total_tokens=member - 1)])))
    _, action = await ask(app2, "fuse now")
    err = orjson.loads(action.body)["error"]
    assert action.status == 400 and err["code"] == "token_budget_too_small" and err["type"] == "invalid_request_error"
    await app.close()
    await app2.close()


async def test_request_plugin_may_lower_the_budget_never_raise_it(sims):
    app = App.from_config(parse_config(config(sims, [fusion_decision(max_total_tokens=5000)])))
    _, action = await ask(app, "fuse", plugins=[{"id": "fusion", "max_total_tokens": 9000}])
    err = orjson.loads(action.body)["error"]
    assert action.status == 400 and err["code"] == "invalid_plugin" and "only lower" in err["message"]
    _, action = await ask(app, "fuse", plugins=[{"id": "fusion", "max_total_tokens": 60}])
    assert orjson.loads(action.body)["fusion"]["budget"]["max_total_tokens"] == 60
    _, action = await ask(
        app, "fuse", model="small", plugins=[{"id": "fusion", "analysis_models": ["small"], "max_total_tokens": 500}]
    )
    err = orjson.loads(action.body)["error"]
    assert action.status == 400 and "needs max_completion_tokens" in err["message"]
    await app.close()


@pytest.mark.parametrize(
    ("algorithm", "settings", "expected"),
    [
        ("fusion", {"model": "judge", "max_total_tokens": 500}, "max_total_tokens: a token budget needs max_completion_tokens"),
        (
            "fusion",
            {"model": "judge", "max_total_tokens": 100, "max_completion_tokens": 200},
            "max_total_tokens: 100 is below one call's max_completion_tokens (200)",
        ),
        (
            "fusion",
            {
                "model": "judge",
                "max_total_tokens": 300,
                "max_completion_tokens": 200,
                "analysis_overrides": [{"model": "small", "max_completion_tokens": 400}],
            },
            "max_total_tokens: 300 is below one call's analysis_overrides[0].max_completion_tokens (400)",
        ),
        ("confidence", {"max_total_tokens": 10, "max_completion_tokens": 20}, "max_total_tokens: 10 is below one call's"),
        ("remom", {"max_total_tokens": 10, "max_completion_tokens": 20}, "max_total_tokens: 10 is below one call's"),
    ],
)
def test_budget_config_errors_name_the_field(sims, algorithm, settings, expected):
    d = {
        "name": "x",
        "modelRefs": [{"model": "small"}, {"model": "medium"}],
        "algorithm": {"type": algorithm, algorithm: settings},
    }
    with pytest.raises(ConfigError) as err:
        parse_config(config(sims, [d]))
    [problem] = err.value.problems
    assert problem.startswith(f"routing.decisions[0].algorithm.{algorithm}.{expected}")


async def test_confidence_stops_escalating_at_the_budget(sims):
    raw = {"model": "auto", "messages": [{"role": "user", "content": "urgent question"}]}
    tier = TokenBudget.cost(final_body(raw, None, max_completion_tokens=20))  # one tier's worst case
    limit = 2 * tier + 5  # two tiers fit; after them (each spends less than its worst case) a third does not
    d = {
        "name": "cascade",
        "priority": 10,
        "rules": {"type": "keyword", "name": "urgent"},
        "modelRefs": [{"model": "small"}, {"model": "medium"}, {"model": "large"}],
        "algorithm": {
            "type": "confidence",
            "confidence": {
                "threshold": 0.99,
                "escalation_order": "declared",
                "max_completion_tokens": 20,
                "max_total_tokens": limit,
            },
        },
    }
    app = App.from_config(parse_config(config(sims, [d])))
    _, action = await ask(app, "urgent question")
    body = orjson.loads(action.body)
    trace = body["confidence"]
    assert action.status == 200 and trace["budget"]["budget_exhausted"]
    assert [a["model"] for a in trace["attempts"]] == ["small", "medium"]
    [cut] = trace["budget"]["cuts"]
    assert cut["stage"] == "tier3" and "not escalated to large" in cut["detail"]
    assert calls(sims)["large"] == 0 and body["usage"]["total_tokens"] <= limit
    await app.close()


async def test_remom_runs_fewer_rounds_within_the_budget(sims):
    d = {
        "name": "rounds",
        "priority": 10,
        "rules": {"type": "keyword", "name": "urgent"},
        "modelRefs": [{"model": "small"}, {"model": "medium"}],
        "algorithm": {
            "type": "remom",
            "remom": {
                "breadth_schedule": [2, 2],
                "max_completion_tokens": 20,
                "synthesis_model": "large",
                "max_total_tokens": 260,
            },
        },
    }
    app = App.from_config(parse_config(config(sims, [d])))
    _, action = await ask(app, "urgent question")
    body = orjson.loads(action.body)
    trace = body["remom"]
    assert action.status == 200 and trace["budget"]["budget_exhausted"]
    assert [r["round"] for r in trace["rounds"]] == [1] and trace["budget"]["cuts"][0]["stage"] == "round2"
    assert calls(sims)["large"] == 1 and body["usage"]["total_tokens"] <= 260
    await app.close()
