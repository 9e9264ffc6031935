"""Routing policies through the real Envoy, two router workers and a real redis-server: a conversation
stays on its model across turns and across workers (sessions in Redis); tenants from an API key's
digest and from a header Envoy's own jwt_authn filter sets (a client's copy stripped), refused what
they may not use; a tenant's tokens per minute shared by both workers (429 + retry-after); a token
budget that cuts a Fusion panel short and says so; and Redis killed mid-test: routing goes on without
affinity, metrics and logs say so, and affinity comes back with Redis. Proven by response headers,
the simulated backends' request logs, Envoy's per-worker counters, Redis' keys and /metrics."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import time
import urllib.request
from typing import Any

import openai
import pytest

from router.config import parse_config
from router.openai.tokens import prompt_tokens
from tests.integration.harness import (
    clear_sim_requests,
    client,
    raw,
    sim_requests,
    start_stack,
)
from tests.integration.redis_server import RedisServer
from tests.unit.budget_plan import fusion_plan, smallest_budget

pytestmark = pytest.mark.envoy

ACME_KEY = "sk-acme-7f3a9c2e51"
METERED_KEY = "sk-metered-0b1d2e3f"
JWT_SECRET = b"fusion-router-test-idp-secret-0123456789"
FUSE_PROMPT = "please fuse these answers about tides"
SIMS = {"b-judge": {"mode": "judge_json"}}

CONFIG: dict[str, Any] = {
    "global": {
        "router": {"allow_debug_header": True},
        "integrations": {"looper": {"endpoint": "http://127.0.0.1:8802/v1/chat/completions", "timeout_seconds": 30}},
        # Generous timeouts: these tests check behaviour on 2 shared cores, not Redis latency.
        "redis": {"address": "127.0.0.1:1", "key_prefix": "frt:", "timeout_ms": 1000, "retry_interval_ms": 300},
        "sessions": {"store": "redis", "key_from": ["header", "first_turns"]},
        "tenants": {
            "api_keys": [
                {"sha256": hashlib.sha256(ACME_KEY.encode()).hexdigest(), "tenant": "acme"},
                {"sha256": hashlib.sha256(METERED_KEY.encode()).hexdigest(), "tenant": "metered"},
            ],
            "policies": [
                {"name": "acme", "models": ["small", "medium", "judge"]},
                {"name": "beta", "models": ["large"], "loopers": []},
                {"name": "metered", "models": ["small", "medium"], "tokens_per_minute": 150},
            ],
            "tokens_store": "redis",
        },
    },
    "backends": [{"name": f"b-{n}", "endpoint": "http://127.0.0.1:1"} for n in ("small", "medium", "large", "judge")],
    "models": [{"name": n, "backend": f"b-{n}"} for n in ("small", "medium", "large", "judge")],
    "default_model": "small",
    "routing": {
        "signals": {"keywords": [{"name": "fuse", "keywords": ["fuse"]}], "tenants": [{"name": "beta"}]},
        "decisions": [
            {
                "name": "fused",
                "priority": 50,
                "rules": {"type": "keyword", "name": "fuse"},
                "modelRefs": [{"model": "small"}, {"model": "medium"}, {"model": "large"}],
                "algorithm": {"type": "fusion", "fusion": {"model": "judge", "max_completion_tokens": 24}},
            },
            {"name": "beta-lane", "priority": 20, "rules": {"type": "tenant", "name": "beta"}, "modelRefs": [{"model": "large"}]},
            {
                "name": "chat",
                "priority": 10,
                "modelRefs": [{"model": "small"}, {"model": "medium"}],
                "algorithm": {"type": "weighted"},
                "session_affinity": True,
            },
        ],
    },
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def id_token(claims: dict[str, Any]) -> str:
    """An HS256 JWT from our test identity provider."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps({"iss": "test-idp", "exp": int(time.time()) + 3600, **claims}).encode())
    sig = hmac.new(JWT_SECRET, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


def add_jwt_authn(envoy: dict[str, Any]) -> None:
    """Envoy's own jwt_authn filter after the header strip and before ext_proc: it sets x-vsr-tenant from
    the token's `tenant` claim, the only way that header reaches the router."""
    hcm = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    jwks = {"keys": [{"kty": "oct", "alg": "HS256", "k": b64url(JWT_SECRET)}]}
    hcm["http_filters"].insert(
        1,
        {
            "name": "envoy.filters.http.jwt_authn",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {
                    "idp": {
                        "issuer": "test-idp",
                        "local_jwks": {"inline_string": json.dumps(jwks)},
                        "from_headers": [{"name": "x-id-token"}],
                        "claim_to_headers": [{"header_name": "x-vsr-tenant", "claim_name": "tenant"}],
                    }
                },
                "rules": [
                    {
                        "match": {"prefix": "/"},
                        "requires": {"requires_any": {"requirements": [{"provider_name": "idp"}, {"allow_missing": {}}]}},
                    }
                ],
            },
        },
    )


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def budgets() -> dict[str, int]:
    cfg = parse_config(CONFIG)
    request = {"model": "auto", "messages": [{"role": "user", "content": FUSE_PROMPT}]}
    full = smallest_budget(cfg, "fused", request, 3)
    assert fusion_plan(cfg, "fused", request, full - 1)[:2] == (2, True)
    return {"full": full, "cut": full - 1}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis, budgets):
    cfg = copy.deepcopy(CONFIG)
    cfg["global"]["redis"]["address"] = redis.address
    cfg["routing"]["decisions"][0]["algorithm"]["fusion"]["max_total_tokens"] = budgets["cut"]
    s = start_stack(tmp_path_factory.mktemp("policies"), cfg, SIMS, workers=2, envoy_patch=add_jwt_authn)
    yield s
    s.stop()


# --------------------------------------------------------------------------- helpers


def keyed(stack, key: str) -> openai.OpenAI:
    """A client whose API key maps to a tenant (global.tenants.api_keys holds its sha256 digest)."""
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key, max_retries=0, timeout=60)


def worker_counts(stack) -> dict[int, int]:
    """ext_proc streams each router worker took (Envoy's per-host request counters)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.envoy_admin_port}/clusters", timeout=5) as r:
        text = r.read().decode()
    return {int(p): int(n) for p, n in re.findall(r"fusion_router::127\.0\.0\.1:(\d+)::rq_total::(\d+)", text)}


def chat(stack, text: str, session: str | None = None, **kw: Any) -> Any:
    headers = {"x-session-id": session} if session else {}
    return client(stack, default_headers=headers, **kw).chat.completions.with_raw_response.create(
        model="vllm-sr/auto", messages=[{"role": "user", "content": text}]
    )


def scrape(stack) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.admin_port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def called(stack, backend: str) -> int:
    return len([r for r in sim_requests(stack, backend) if r["path"] == "/v1/chat/completions"])


# --------------------------------------------------------------------------- sessions


def test_a_conversation_stays_on_its_model_across_turns_and_both_workers(stack, redis):
    models_seen = set()
    for conv in range(4):
        session = f"conv-{conv}-{time.monotonic_ns()}"
        workers: set[int] = set()
        model = None
        for turn in range(40):
            before = worker_counts(stack)
            resp = chat(stack, f"turn {turn} of the conversation", session)
            after = worker_counts(stack)
            served = [p for p in after if after[p] != before.get(p, 0)]
            assert len(served) == 1 and after[served[0]] - before.get(served[0], 0) == 1, (before, after)
            workers.add(served[0])
            assert resp.headers["x-vsr-selected-decision"] == "chat"
            if model is None:
                model = resp.headers["x-vsr-selected-model"]
                assert resp.headers["x-vsr-selection"].startswith("weighted: drawn")
            else:
                # Every later turn kept the first turn's model, whichever worker took it.
                assert resp.headers["x-vsr-selected-model"] == model
                assert resp.headers["x-vsr-selection"] == f"session: kept {model} from an earlier turn (decision chat)"
            if len(workers) == 2 and turn >= 2:
                break
        assert len(workers) == 2, "both workers must have served this conversation for the test to mean anything"
        models_seen.add(model)
    keys = redis.command("KEYS", "frt:session:*")
    assert keys.count(b"frt:session:") >= 4  # pinned in the shared store, hashed (no session id in clear)
    assert b"conv-" not in keys


def test_the_first_turns_hash_keys_a_conversation_without_a_session_id(stack):
    history = [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"unique opener {time.monotonic_ns()}"}]
    c = client(stack)
    first = c.chat.completions.with_raw_response.create(model="auto", messages=history)
    model = first.headers["x-vsr-selected-model"]
    for turn in range(3):
        history += [{"role": "assistant", "content": "ok"}, {"role": "user", "content": f"and {turn}?"}]
        resp = c.chat.completions.with_raw_response.create(model="auto", messages=history)
        assert resp.headers["x-vsr-selected-model"] == model and resp.headers["x-vsr-selection"].startswith("session: kept")


def test_a_huge_or_binary_session_header_is_a_400(stack):
    for value in ("x" * 300, "caf\xe9"):
        status, _, body = raw(
            stack.url,
            "POST",
            "/v1/chat/completions",
            json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}).encode(),
            {"x-session-id": value},
        )
        err = json.loads(body)["error"]
        assert status == 400 and err["code"] == "invalid_session_id" and err["param"] == "x-session-id"


# --------------------------------------------------------------------------- tenants


def test_a_tenant_is_refused_a_model_it_may_not_use(stack):
    clear_sim_requests(stack)
    acme = keyed(stack, ACME_KEY)
    with pytest.raises(Exception) as err:
        acme.chat.completions.create(model="large", messages=[{"role": "user", "content": "hi"}])
    exc = err.value
    assert exc.status_code == 403 and exc.body["code"] == "model_not_allowed" and "`large`" in exc.body["message"]
    assert called(stack, "b-large") == 0
    ok = acme.chat.completions.with_raw_response.create(model="medium", messages=[{"role": "user", "content": "hi"}])
    assert ok.headers["x-vsr-selected-model"] == "medium"


def test_envoy_sets_the_tenant_header_and_a_clients_copy_is_stripped(stack):
    beta = {"x-id-token": id_token({"tenant": "beta"})}
    resp = client(stack, default_headers=beta).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hello"}]
    )
    assert resp.headers["x-vsr-selected-decision"] == "beta-lane" and resp.headers["x-vsr-selected-model"] == "large"
    with pytest.raises(Exception) as err:  # beta may use `large` only
        client(stack, default_headers=beta).chat.completions.create(model="small", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 403 and "`small`" in err.value.body["message"]
    with pytest.raises(Exception) as err:  # and no looper
        client(stack, default_headers=beta).chat.completions.create(
            model="vllm-sr/fusion", messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.status_code == 403 and err.value.body["code"] == "looper_not_allowed"
    # A client claiming to be beta: Envoy stripped the header before ext_proc, so it is nobody's request.
    forged = client(stack, default_headers={"x-vsr-tenant": "beta"}).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hello"}]
    )
    assert forged.headers["x-vsr-selected-decision"] == "chat" and forged.headers["x-vsr-selected-model"] in ("small", "medium")


def test_a_tenants_tokens_per_minute_are_shared_by_both_workers(stack):
    """Each request is charged its estimate (prompt + max_completion_tokens) against 150 tokens a minute.
    With one window per process a worker would refuse only after admitting its own full share; a worker
    refusing while it admitted less proves the window is the shared one."""
    metered = keyed(stack, METERED_KEY)
    cost = prompt_tokens({"messages": [{"role": "user", "content": "count me 0"}]}) + 30
    fit = 150 // cost
    statuses: list[int] = []
    admitted: dict[int, int] = {}
    proof = None
    for i in range(40):
        before = worker_counts(stack)
        try:
            metered.chat.completions.create(
                model="small", messages=[{"role": "user", "content": f"count me {i % 10}"}], max_completion_tokens=30
            )
            status = 200
        except openai.APIStatusError as exc:
            status = exc.status_code
            assert exc.body["code"] == "tenant_rate_limited"
            assert 1 <= int(exc.response.headers["retry-after"]) <= 60
        after = worker_counts(stack)
        [worker] = [p for p in after if after[p] != before.get(p, 0)]
        statuses.append(status)
        if status == 200:
            admitted[worker] = admitted.get(worker, 0) + 1
        elif admitted.get(worker, 0) < fit:
            proof = (worker, admitted.get(worker, 0))
            break
    assert fit >= 2 and statuses[:fit] == [200] * fit and set(statuses[fit:]) == {429}, (cost, statuses)
    assert proof is not None, f"no worker refused below its own share: {admitted}"


# --------------------------------------------------------------------------- token budgets


def test_a_budget_cuts_a_fusion_panel_short_and_says_so(stack, budgets):
    clear_sim_requests(stack)
    resp = client(stack).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": FUSE_PROMPT}]
    )
    body = json.loads(resp.text)
    trace = body["fusion"]
    assert resp.headers["x-vsr-response-path"] == "fusion" and trace["outcome"] == "fused"
    assert trace["budget"]["budget_exhausted"] is True and trace["budget"]["max_total_tokens"] == budgets["cut"]
    [cut] = trace["budget"]["cuts"]
    assert cut["stage"] == "panel" and cut["detail"].startswith("called 2 of 3 panel members (large not called")
    assert trace["analysis_models"] == ["small", "medium", "large"] and sorted(trace["answered_models"]) == ["medium", "small"]
    assert (called(stack, "b-small"), called(stack, "b-medium"), called(stack, "b-large"), called(stack, "b-judge")) == (
        1,
        1,
        0,
        2,
    )
    assert body["usage"]["total_tokens"] <= budgets["cut"]
    assert resp.headers["x-vsr-looper-budget"] == f"spent={body['usage']['total_tokens']}; max={budgets['cut']}; exhausted"


# --------------------------------------------------------------------------- Redis goes away


def test_redis_killed_mid_conversation_routing_goes_on_and_affinity_returns(stack, redis):
    session = f"survivor-{time.monotonic_ns()}"
    first = chat(stack, "hello", session)
    model = first.headers["x-vsr-selected-model"]
    assert chat(stack, "again", session).headers["x-vsr-selection"].startswith("session: kept")
    port = redis.port
    redis.stop()
    for turn in range(6):
        resp = chat(stack, f"still there? {turn}", session)
        assert resp.status_code == 200 and resp.headers["x-vsr-selected-decision"] == "chat"
        assert "session store unavailable" in resp.headers["x-vsr-selection"]
        assert resp.headers["x-vsr-selected-model"] in ("small", "medium")
    # The metered tenant is admitted uncounted while its window is out of reach.
    keyed(stack, METERED_KEY).chat.completions.create(model="small", messages=[{"role": "user", "content": "x"}])
    text = scrape(stack)
    assert metric(text, "fusion_router_state_store_up", store="redis") == 0
    assert metric(text, "fusion_router_session_affinity_total", store="redis", result="unavailable") >= 6
    assert metric(text, "fusion_router_tenant_budget_requests_total", tenant="metered", result="unavailable") >= 1
    assert metric(text, "fusion_router_state_store_errors_total", store="redis") >= 2
    assert "state_store_unavailable" in stack.log("router")
    # Redis back (empty: no persistence): new conversations are pinned and kept again once the breaker
    # lets the workers ask (retry_interval_ms), whichever worker they reach.
    redis.port = port
    redis.start()
    deadline = time.monotonic() + 60
    while True:
        fresh = f"after-{time.monotonic_ns()}"
        chat(stack, "new start", fresh)
        second = chat(stack, "second turn", fresh)
        third = chat(stack, "third turn", fresh)
        if all(r.headers["x-vsr-selection"].startswith("session: kept") for r in (second, third)):
            break
        assert time.monotonic() < deadline, "affinity did not come back after Redis returned"
        time.sleep(0.2)
    assert model in ("small", "medium")
    assert "state_store_available" in stack.log("router")
