"""vLLM Semantic Router's shapes for features the router has, each from a snippet of the reference's
own configs (tests/compat/reference, Apache-2.0): the v0.3 reader, and the router-layout fields that
take the reference's names."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import yaml

from router.config import ConfigError, parse_config, read_config_data
from router.config.schema import ModelRef, ModelSpec
from router.decisions.plugins import apply_model_ref, apply_route_plugins, model_ref_for
from router.decisions.rules import evaluate
from router.signals import pii_labels
from router.signals.base import SignalContext


def v03(routing: str = "", top: str = "", models: str = "") -> dict:
    """A v0.3 document around a snippet: one model ``m`` on 127.0.0.1:8000 unless ``models`` says more."""
    doc = yaml.safe_load(f"""
version: v0.3
providers:
  defaults: {{default_model: m}}
  models:
    - name: m
      backend_refs: [{{name: primary, endpoint: "127.0.0.1:8000", protocol: http, weight: 100}}]
{models}
routing:
  modelCards: [{{name: m}}]
""")
    if routing:
        doc["routing"].update(yaml.safe_load(routing))
    if top:
        doc.update(yaml.safe_load(top))
    return doc


def read(doc: dict):
    return read_config_data(doc, "vsr.yaml")


def refused(doc: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        read(doc)
    assert all("is not supported by fusion-router" in p for p in info.value.problems), info.value.problems
    return info.value.problems


NATIVE = {"backends": [{"name": "b", "endpoint": "http://127.0.0.1:1"}], "models": [{"name": "m", "backend": "b"}]}


def native(**routing) -> dict:
    return {**NATIVE, "routing": routing}


# --------------------------------------------------------------------------- the layout itself


def test_providers_backend_refs_and_defaults_become_backends_and_models():
    # config/config.yaml's providers block, trimmed to one backend_ref per model
    doc = v03(
        routing="""
modelCards:
  - {name: qwen3-8b, param_size: 8B, description: General-purpose text model for the default routing tier.}
  - name: qwen3-32b
    param_size: 32B
    loras: [{name: computer-science-expert, description: Adapter specialized for computer science.}]
"""
    )
    doc["providers"] = yaml.safe_load("""
defaults:
  default_model: qwen3-8b
  default_reasoning_effort: medium
  reasoning_families:
    qwen3: {type: chat_template_kwargs, parameter: enable_thinking}
    gpt: {type: reasoning_effort, parameter: reasoning.effort}
models:
  - name: qwen3-8b
    reasoning_family: qwen3
    provider_model_id: qwen3-8b-instruct
    pricing: {currency: USD, prompt_per_1m: 0.18, cached_input_per_1m: 0.04, completion_per_1m: 0.42}
    backend_refs:
      - {name: local-primary, endpoint: "127.0.0.1:8000", protocol: http, weight: 80, type: chat, api_key_env: VLLM_SR_PRIMARY_API_KEY}
  - name: qwen3-32b
    reasoning_family: gpt
    backend_refs:
      - {name: remote, base_url: "https://api.example.com/v1", provider: openai, auth_header: Authorization, auth_prefix: Bearer, api_key: "${OPENAI_KEY}"}
""")
    cfg, report = read(doc)
    assert report.format == "vllm-sr v0.3"
    b = {x.name: x for x in cfg.backends}
    assert b["qwen3-8b_local-primary"].endpoint == "http://127.0.0.1:8000"
    assert b["qwen3-8b_local-primary"].api_key_env == "VLLM_SR_PRIMARY_API_KEY"
    assert b["qwen3-32b_remote"].endpoint == "https://api.example.com/v1" and b["qwen3-32b_remote"].api_key_env == "OPENAI_KEY"
    m = {x.name: x for x in cfg.models}
    assert m["qwen3-8b"].served_id == "qwen3-8b-instruct" and m["qwen3-8b"].param_billions == 8.0
    assert m["qwen3-8b"].pricing.prompt_per_1m == 0.18 and m["qwen3-8b"].reasoning_family.parameter == "enable_thinking"
    assert m["qwen3-32b"].loras == ["computer-science-expert"] and m["qwen3-32b"].reasoning_family.type == "reasoning_effort"
    assert cfg.default_model == "qwen3-8b"
    assert any("cached_input_per_1m: ignored" in line for line in report.ignored)


def test_a_literal_api_key_and_several_backend_refs_are_refused():
    doc = v03(
        models="""
    - name: x
      backend_refs:
        - {name: a, endpoint: "127.0.0.1:1"}
        - {name: b, base_url: "https://api.example.com/v1", api_key: static-demo-key}
"""
    )
    problems = refused(doc)
    assert any(p.startswith("providers.models[1].backend_refs: 2 backend_refs for one model") for p in problems)


def test_a_lora_named_as_a_model_is_served_by_its_base():
    # deploy/kubernetes/*/semantic-router-values: default_model names a LoRA of base-model
    doc = v03(
        routing="""
modelCards:
  - name: base-model
    loras: [{name: science-expert}, {name: general-expert}]
  - name: general-expert
decisions:
  - name: biology_decision
    rules: {operator: OR, conditions: [{type: domain, name: biology}]}
    modelRefs: [{model: base-model, lora_name: science-expert, use_reasoning: false}]
signals:
  domains: [{name: biology, description: Biology and life sciences questions, mmlu_categories: [biology]}]
"""
    )
    doc["providers"] = {
        "defaults": {"default_model": "general-expert"},
        "models": [{"name": "base-model", "backend_refs": [{"name": "v", "endpoint": "vllm:8000"}]}],
    }
    cfg, _ = read(doc)
    alias = next(m for m in cfg.models if m.name == "general-expert")
    assert (alias.backend, alias.served_id) == ("base-model_v", "general-expert")
    assert cfg.routing.decisions[0].modelRefs[0].lora_name == "science-expert"


def test_unknown_lora_name_is_an_error():
    doc = native(decisions=[{"name": "d", "modelRefs": [{"model": "m", "lora_name": "nope"}]}])
    doc["models"] = [{"name": "m", "backend": "b", "loras": ["science-expert"]}]
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert "routing.decisions[0].modelRefs[0].lora_name: 'nope' is not one of model 'm''s loras" in str(info.value)


# --------------------------------------------------------------------------- signals


def test_description_on_every_signal():
    doc = native(
        signals={
            "keywords": [{"name": "k", "description": "Keywords.", "keywords": ["x"]}],
            "context": [{"name": "c", "description": "Long.", "min_tokens": 1}],
            "language": [{"name": "zh", "description": "Chinese-language requests."}],
            "embeddings": [{"name": "e", "description": "Support.", "candidates": ["a"]}],
            "domains": [{"name": "d", "description": "Topics.", "categories": [{"name": "law"}]}],
            "complexity": [{"name": "x", "description": "Hard.", "hard": ["a"], "easy": ["b"]}],
            "jailbreak": [{"name": "j", "description": "Detect common prompt-injection or jailbreak attempts."}],
            "pii": [{"name": "p", "description": "Sensitive prompts."}],
        }
    )
    cfg = parse_config(doc)
    assert {
        s.description
        for sec in ("keywords", "context", "language", "embeddings", "domains", "complexity", "jailbreak", "pii")
        for s in getattr(cfg.routing.signals, sec)
    } >= {"Keywords.", "Hard."}


def test_token_counts_like_32k():
    # config/fragments/signal/context/long-context.yaml
    cfg, _ = read(
        v03(
            routing="""
signals:
  context:
    - name: long_context
      min_tokens: 32K
      max_tokens: 256K
      description: Requests that need a larger effective context window.
"""
        )
    )
    sig = cfg.routing.signals.context[0]
    assert (sig.min_tokens, sig.max_tokens) == (32_000, 256_000)
    with pytest.raises(ConfigError, match="expected a token count like 4096, 32K or 1M"):
        parse_config(native(signals={"context": [{"name": "c", "min_tokens": "lots"}]}))


def test_language_signals_named_by_code_with_threshold():
    # config/config.yaml: {name: zh, threshold: 0.0}, {name: es}
    cfg, _ = read(
        v03(
            routing="""
signals:
  language:
    - {name: zh, description: Chinese-language requests., threshold: 0.0}
    - {name: es, description: Spanish-language requests., threshold: 0.6}
decisions:
  - name: chinese
    rules: {operator: OR, conditions: [{type: language, name: zh}]}
    modelRefs: [{model: m}]
"""
        )
    )
    zh, es = cfg.routing.signals.language
    assert (zh.languages, zh.min_confidence) == (["zh"], 0.3)  # 0: the reference's built-in 0.3
    assert (es.languages, es.min_confidence) == (["es"], 0.6)
    from router.signals.language import LanguageSignal

    res = LanguageSignal(zh).evaluate_now(SignalContext.of_prompt("请用中文解释一下机器学习的基本原理是什么"))
    assert res.matched and res.detail == {"language": "zh"}


def test_embedding_aggregation_any_is_max_reaching_the_threshold():
    # config/config.yaml: account_management uses aggregation_method: any
    cfg, _ = read(
        v03(
            routing="""
signals:
  embeddings:
    - name: account_management
      threshold: 0.72
      aggregation_method: any
      candidates: [password reset, account settings, billing information, subscription management]
"""
        )
    )
    spec = cfg.routing.signals.embeddings[0]
    assert spec.aggregation_method == "any"
    from router.signals.embedding import EmbeddingSignal

    sig = EmbeddingSignal(spec, runtime=object())
    sig._candidates = np.eye(4, dtype=np.float32)
    vec = np.array([0.8, 0.6, 0.0, 0.0], dtype=np.float32)

    async def embed_prompt(ctx, model):
        return vec, False

    sig.embed_prompt = embed_prompt  # type: ignore[method-assign]
    res = asyncio.run(sig.score(SignalContext.of_prompt("reset my password")))
    assert res.matched and res.detail["score"] == pytest.approx(0.8)


def test_complexity_with_threshold_candidates_and_medium():
    # config/fragments/signal/complexity/escalation.yaml
    cfg, _ = read(
        v03(
            routing="""
signals:
  complexity:
    - name: needs_reasoning
      threshold: 0.75
      description: Escalate multi-step reasoning or synthesis-heavy prompts.
      hard: {candidates: [solve this step by step, compare multiple tradeoffs, analyze the root cause]}
      easy: {candidates: [answer briefly, quick summary, simple rewrite]}
decisions:
  - name: middle
    rules: {operator: AND, conditions: [{type: complexity, name: "needs_reasoning:medium"}]}
    modelRefs: [{model: m}]
"""
        )
    )
    spec = cfg.routing.signals.complexity[0]
    assert spec.hard == ["solve this step by step", "compare multiple tradeoffs", "analyze the root cause"]
    assert spec.levels == ("hard", "medium", "easy")
    from router.signals.complexity import ComplexitySignal

    sig = ComplexitySignal(spec, runtime=object())
    assert [sig.level(m) for m in (0.8, 0.1, -0.8)] == ["hard", "medium", "easy"]
    # Two levels (no threshold): no medium leaf to route on.
    doc = native(
        signals={"complexity": [{"name": "c", "hard": ["a"], "easy": ["b"]}]},
        decisions=[{"name": "d", "rules": {"type": "complexity", "name": "c:medium"}, "modelRefs": [{"model": "m"}]}],
    )
    with pytest.raises(ConfigError, match="no complexity signal named 'c:medium'"):
        parse_config(doc)
    refusal = refused(
        v03(
            routing="""
signals:
  complexity:
    - name: needs_reasoning
      threshold: 0.75
      hard: {candidates: [a], image_candidates: [generate a detailed architecture diagram]}
      easy: {candidates: [b]}
"""
        )
    )
    assert refusal == [
        (
            "routing.signals.complexity[0].hard.image_candidates: image exemplars is not supported by "
            "fusion-router (signals read the text of a request)"
        )
    ]


def test_domains_by_mmlu_categories():
    # config/fragments/signal/domain/mmlu.yaml (two of its entries) + a name-only domain (istio config)
    cfg, _ = read(
        v03(
            routing="""
signals:
  domains:
    - {name: computer science, description: Computer science and software engineering prompts., mmlu_categories: ["computer science"]}
    - {name: law, description: Legal questions and law-related topics., mmlu_categories: [law]}
    - {name: history}
decisions:
  - name: cs
    rules: {operator: AND, conditions: [{type: domain, name: computer science}]}
    modelRefs: [{model: m}]
"""
        )
    )
    (sig,) = cfg.routing.signals.domains
    assert [(c.name, c.mmlu_categories) for c in sig.categories] == [
        ("computer science", ["computer science"]),
        ("law", ["law"]),
        ("history", ["history"]),
    ]
    from router.signals.domain import classes_of

    classes = {c.label: c.leaves for c in classes_of(sig)}
    assert len(classes) == 14 and classes["law"] == ("law",) and classes["chemistry"] == ()  # a subject no domain names
    with pytest.raises(ConfigError, match="unknown MMLU categories"):
        parse_config(
            native(signals={"domains": [{"name": "d", "categories": [{"name": "x", "mmlu_categories": ["astrology"]}]}]})
        )


def test_pii_label_names_map_onto_the_model_labels():
    # config/fragments/signal/pii/strict.yaml
    cfg, _ = read(
        v03(
            routing="""
signals:
  pii:
    - name: restricted_pii
      threshold: 0.85
      include_history: true
      pii_types_allowed: [EMAIL_ADDRESS]
      description: Sensitive prompts where only low-risk identifiers may pass through.
"""
        )
    )
    assert cfg.routing.signals.pii[0].pii_types_allowed == ["EMAIL_ADDRESS"]
    assert pii_labels.expand(["EMAIL_ADDRESS", "PERSON", "GPE", "DATE_TIME"]) == {
        "EMAIL",
        "GIVEN_NAME",
        "SURNAME",
        "CITY",
        "STATE",
    }
    from router.signals.pii import PIISignal

    assert PIISignal(cfg.routing.signals.pii[0], runtime=object())._allowed == {"EMAIL"}
    with pytest.raises(ConfigError) as info:
        parse_config(native(signals={"pii": [{"name": "p", "pii_types_allowed": ["EMAIL_ADRESS"]}]}))
    assert "routing.signals.pii[0].pii_types_allowed" in str(info.value) and "unknown PII labels ['EMAIL_ADRESS']" in str(
        info.value
    )


def test_pii_model_labels_match_the_shipped_model():
    import json
    from pathlib import Path

    meta = Path(__file__).resolve().parents[2] / "models" / "pii" / "metadata.json"
    if not meta.is_file():
        pytest.skip("models not built")
    labels = {lab.split("-", 1)[1] for lab in json.loads(meta.read_text())["labels"] if lab != "O"}
    assert labels == pii_labels.MODEL_LABELS


# --------------------------------------------------------------------------- decisions and plugins


def test_empty_or_omitted_conditions_are_the_catch_all():
    # src/vllm-sr/cli/templates/config.template.yaml
    cfg, _ = read(
        v03(
            routing="""
decisions:
  - name: default-route
    description: Catch-all route for every request while you build out more specific signals and decisions.
    priority: 100
    rules: {operator: AND, conditions: []}
    modelRefs: [{model: m, use_reasoning: false}]
"""
        )
    )
    assert cfg.routing.decisions[0].rules is None and evaluate(None, {}) == 0.0
    for rules in ({}, {"operator": "OR", "conditions": []}, None):
        assert (
            parse_config(native(decisions=[{"name": "d", "rules": rules, "modelRefs": [{"model": "m"}]}]))
            .routing.decisions[0]
            .rules
            is None
        )
    nested = {"operator": "AND", "conditions": [{"operator": "OR", "conditions": []}]}
    with pytest.raises(ConfigError, match="conditions"):
        parse_config(native(decisions=[{"name": "d", "rules": nested, "modelRefs": [{"model": "m"}]}]))


def test_enabled_false_plugins_do_nothing():
    # deploy/kubernetes/istio/config.yaml: system prompts shipped disabled
    cfg, report = read(
        v03(
            routing="""
decisions:
  - name: business
    rules: {operator: AND, conditions: []}
    modelRefs: [{model: m}]
    plugins:
      - type: system_prompt
        configuration: {enabled: false, system_prompt: You are a senior business consultant., mode: replace}
      - type: response_cache
        configuration: {enabled: false, similarity_threshold: 0.8}
"""
        )
    )
    d = cfg.routing.decisions[0]
    body = {"messages": [{"role": "user", "content": "hi"}]}
    apply_route_plugins(d, body, {}, [])
    assert body == {"messages": [{"role": "user", "content": "hi"}]} and d.active_plugins == []
    assert any("plugins[type=response_cache] (enabled: false): ignored (disabled)" in line for line in report.ignored)


def test_header_mutation_update_and_delete():
    # config/fragments/plugin/header-mutation/tenant-routing.yaml
    cfg, _ = read(
        v03(
            routing="""
decisions:
  - name: tenant
    rules: {operator: AND, conditions: []}
    modelRefs: [{model: m}]
    plugins:
      - type: header_mutation
        configuration:
          add: [{name: X-Tenant-Tier, value: premium}]
          update: [{name: X-Route-Source, value: semantic-router}]
          delete: [X-Debug-Trace]
"""
        )
    )
    headers: dict[str, str] = {}
    remove: list[str] = []
    apply_route_plugins(cfg.routing.decisions[0], {"messages": []}, headers, remove)
    assert headers == {"x-tenant-tier": "premium", "x-route-source": "semantic-router"} and remove == ["x-debug-trace"]


def _qwen(family: dict | None = None) -> ModelSpec:
    return ModelSpec(
        name="qwen3-32b",
        backend="b",
        served_model_id="Qwen/Qwen3-32B",
        reasoning_family=family,
        loras=["computer-science-expert"],
    )


def test_model_refs_reasoning_and_lora_in_the_outgoing_body():
    # config/fragments/decision/single/domain-computer-science.yaml + config/config.yaml's families
    qwen3 = {"type": "chat_template_kwargs", "parameter": "enable_thinking"}
    body = {"model": "Qwen/Qwen3-32B", "messages": []}
    apply_model_ref(body, ModelRef(model="qwen3-32b", use_reasoning=True, lora_name="computer-science-expert"), _qwen(qwen3))
    assert body == {"model": "computer-science-expert", "messages": [], "chat_template_kwargs": {"enable_thinking": True}}

    body = {"model": "x", "chat_template_kwargs": {"other": 1}}
    apply_model_ref(body, ModelRef(model="qwen3-32b", use_reasoning=False), _qwen(qwen3))
    assert body["chat_template_kwargs"] == {"other": 1, "enable_thinking": False}  # thinking models: say no

    gpt = {"type": "reasoning_effort", "parameter": "reasoning.effort"}
    body = {"model": "x"}
    apply_model_ref(body, ModelRef(model="qwen3-32b", use_reasoning=True, reasoning_effort="high"), _qwen(gpt))
    assert body == {"model": "x", "reasoning": {"effort": "high"}}
    body = {"model": "x", "reasoning_effort": "low"}
    apply_model_ref(
        body,
        ModelRef(model="qwen3-32b", use_reasoning=False),
        _qwen({"type": "top_level_reasoning_effort", "parameter": "reasoning_effort"}),
    )
    assert body == {"model": "x", "reasoning_effort": "low"}  # off: the client's own value stays

    body = {"model": "x"}
    apply_model_ref(body, ModelRef(model="qwen3-32b", reasoning_effort="medium"), _qwen())
    assert body == {"model": "x", "reasoning_effort": "medium"}  # no family: vLLM's top-level field
    body = {"model": "x"}
    apply_model_ref(body, ModelRef(model="qwen3-32b", use_reasoning=True), _qwen())
    assert body == {"model": "x"}  # no family, no effort: nothing a backend would understand


def test_reader_fills_use_reasoning_and_default_effort():
    doc = v03(
        routing="""
decisions:
  - name: hard
    rules: {operator: AND, conditions: []}
    modelRefs: [{model: m, use_reasoning: true, weight: 0.7}, {model: m}]
"""
    )
    doc["providers"]["defaults"]["default_reasoning_effort"] = "high"
    cfg, _ = read(doc)
    first, second = cfg.routing.decisions[0].modelRefs
    assert (first.use_reasoning, first.reasoning_effort, first.weight) == (True, "high", 0.7)
    assert (second.use_reasoning, second.reasoning_effort) == (False, None)  # omitted means false in the reference
    assert model_ref_for(cfg.routing.decisions[0], cfg.models[0]) is first


def test_looper_max_response_bytes_mb_and_round_timeout():
    # config/fragments/algorithm/looper/fusion.yaml (round_timeout_seconds) + global looper knobs
    cfg, _ = read(
        v03(
            routing="""
decisions:
  - name: fused
    rules: {operator: AND, conditions: []}
    modelRefs: [{model: m}]
    algorithm:
      type: fusion
      fusion: {model: m, analysis_models: [m], max_concurrent: 2, round_timeout_seconds: 90, min_successful_responses: 1, on_error: skip}
""",
            top="""
global:
  integrations:
    looper: {endpoint: "http://envoy:8899/v1/chat/completions", timeout_seconds: 1200, max_response_bytes_mb: 4,
             fusion: {model_names: [vllm-sr/fusion]}}
""",
        )
    )
    looper = cfg.global_.integrations.looper
    assert (looper.max_response_bytes, looper.timeout_seconds) == (4 * 1024 * 1024, 1200)
    assert cfg.routing.decisions[0].algorithm.fusion.round_timeout_seconds == 90
    with pytest.raises(ConfigError, match="not both"):
        parse_config({**NATIVE, "global": {"integrations": {"looper": {"max_response_bytes": 1, "max_response_bytes_mb": 1}}}})


# --------------------------------------------------------------------------- refusals


def test_features_the_router_lacks_are_refused_by_name_in_both_layouts():
    # config/fragments/signal/fact-check/needs-verification.yaml and selection/router-dc.yaml shapes
    problems = refused(
        v03(
            routing="""
signals:
  fact_check: [{name: needs_fact_check, description: Prompts with factual claims that should be verified.}]
decisions:
  - name: verify
    rules: {operator: AND, conditions: [{type: fact_check, name: needs_fact_check}]}
    modelRefs: [{model: m}]
    plugins: [{type: semantic-cache, configuration: {enabled: true, similarity_threshold: 0.9}}]
"""
        )
    )
    assert problems == [
        "routing.signals.fact_check: fact_check signals is not supported by fusion-router (needs the fact-check classifier model)",
        "routing.decisions[0].rules.conditions[0].type: fact_check signals is not supported by fusion-router (needs the fact-check classifier model)",
        "routing.decisions[0].plugins[0].type: the semantic-cache plugin is not supported by fusion-router (response (semantic) caching)",
    ]
    for kind in ("router_dc", "ratings", "workflows"):
        with pytest.raises(ConfigError) as info:
            parse_config(native(decisions=[{"name": "d", "modelRefs": [{"model": "m"}], "algorithm": {"type": kind}}]))
        assert f"algorithm type {kind!r} is not supported by fusion-router" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config(native(signals={"reasks": [{"name": "r"}]}))
    assert info.value.problems == [
        "routing.signals.reasks: reasks signals is not supported by fusion-router (re-ask detection across turns)"
    ]


def test_runtime_knobs_load_with_a_warning_and_features_do_not():
    doc = v03(
        top="""
listeners: [{name: http-8899, address: 0.0.0.0, port: 8899, timeout: 300s}]
global:
  router: {clear_route_cache: true, strategy: priority}
  services:
    observability: {metrics: {enabled: true}}
  stores:
    response_cache: {enabled: true, backend_type: memory}
"""
    )
    _, report = read(doc)
    assert any(line.startswith("listeners: ignored (") for line in report.ignored)
    assert any(line.startswith("global.stores.response_cache: ignored (") for line in report.ignored)
    doc["global"]["services"]["response_api"] = {"enabled": True}
    doc["global"]["router"]["strategy"] = "confidence"
    assert refused(doc) == [
        "global.router.strategy: strategy 'confidence' is not supported by fusion-router (decisions are chosen by priority, then rule confidence)",
        "global.services.response_api: response_api is not supported by fusion-router (the OpenAI Responses API (fusion-router serves /v1/chat/completions))",
    ]


def test_a_key_neither_layout_knows_is_named():
    doc = v03(routing="decisions: [{name: d, rules: {}, modelRefs: [{model: m}], colour: blue}]")
    assert refused(doc) == [
        (
            "routing.decisions[0].colour: `colour` is not supported by fusion-router "
            "(a vLLM-SR setting fusion-router does not implement (or a misspelling))"
        )
    ]


# --------------------------------------------------------------------------- through the pipeline


async def test_a_v03_decision_changes_the_routed_request():
    """A v0.3 config's modelRef and header_mutation reach the request Envoy forwards."""
    import orjson

    from router.actions import Route
    from router.app import App
    from router.extproc.pipeline import handle
    from router.state import RequestState

    doc = v03(
        routing="""
modelCards:
  - {name: m}
  - name: qwen3-32b
    loras: [{name: computer-science-expert}]
signals:
  keywords: [{name: code, operator: OR, keywords: [refactor]}]
decisions:
  - name: cs
    priority: 100
    rules: {operator: AND, conditions: [{type: keyword, name: code}]}
    modelRefs: [{model: qwen3-32b, use_reasoning: true, lora_name: computer-science-expert}]
    plugins:
      - type: header_mutation
        configuration: {update: [{name: X-Route-Source, value: semantic-router}], delete: [X-Debug-Trace]}
""",
        models="""
    - name: qwen3-32b
      reasoning_family: qwen3
      provider_model_id: Qwen/Qwen3-32B
      backend_refs: [{name: large, endpoint: "127.0.0.1:8001"}]
""",
    )
    doc["providers"]["defaults"]["reasoning_families"] = {
        "qwen3": {"type": "chat_template_kwargs", "parameter": "enable_thinking"}
    }
    cfg, _ = read(doc)
    app = App.from_config(cfg)
    body = orjson.dumps({"model": "MoM", "messages": [{"role": "user", "content": "Please refactor this"}]})
    state = RequestState(policy=app.policy, body=bytearray(body))
    action = await handle(app, state)
    assert isinstance(action, Route) and state.decision.name == "cs"
    sent = orjson.loads(action.body)
    assert sent["model"] == "computer-science-expert" and sent["chat_template_kwargs"] == {"enable_thinking": True}
    assert action.set_headers["x-route-source"] == "semantic-router" and "x-debug-trace" in action.remove_headers
    assert action.set_headers["x-vsr-cluster"] == "qwen3-32b_large"
