"""Fusion building blocks: judge analysis parsing, template rendering, settings layering, text history."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson
import pytest

from router.config import load_config
from router.config.schema import Routing
from router.decisions.policy import compile_policy
from router.looper.analysis import parse_analysis
from router.looper.fusion import DEFAULTS, FusionSettings, resolve
from router.looper.merge import merge
from router.looper.messages import original_text, text_history
from router.looper.plugins import parse_plugins
from router.looper.spec import ResolveContext
from router.looper.templates import ANALYSIS_TEMPLATE, PROMPT_VERSION, SYNTHESIS_TEMPLATE, render
from router.looper.trace import TraceSettings
from router.openai.errors import OpenAIError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def policy():
    # The shipped config's models and aliases; its routing (ML signals included) plays no part here.
    cfg = load_config(ROOT / "config" / "default.yaml")
    return compile_policy(cfg.model_copy(update={"routing": Routing()}))


# --------------------------------------------------------------------------- parse_analysis

PLAIN = {
    "consensus": ["Paris is the capital", "It is on the Seine"],
    "contradictions": ["population figure differs"],
    "partial_coverage": ["history of the city"],
    "unique_insights": ["mentions the Eiffel Tower"],
    "blind_spots": ["no sources"],
}

RICH = {
    "consensus": ["Paris is the capital"],
    "contradictions": [{"topic": "population", "stances": [{"model": "a", "stance": "2.1M"}, {"model": "b", "stance": "12M"}]}],
    "partial_coverage": [{"models": ["a"], "point": "metro area vs city"}],
    "unique_insights": [{"model": "b", "insight": "Eiffel Tower height"}],
    "blind_spots": ["no sources cited"],
}


def test_plain_list_form_is_lifted_to_objects():
    parsed = parse_analysis(orjson.dumps(PLAIN).decode())
    assert parsed.status == "ok"
    a = parsed.analysis
    assert a.consensus == PLAIN["consensus"]
    assert [c.topic for c in a.contradictions] == ["population figure differs"]
    assert a.contradictions[0].stances == []
    assert [p.point for p in a.partial_coverage] == ["history of the city"]
    assert [u.insight for u in a.unique_insights] == ["mentions the Eiffel Tower"]
    assert a.blind_spots == ["no sources"]


def test_openrouter_rich_form():
    parsed = parse_analysis(orjson.dumps(RICH).decode())
    assert parsed.status == "ok"
    a = parsed.analysis
    assert a.contradictions[0].topic == "population"
    assert [(s.model, s.stance) for s in a.contradictions[0].stances] == [("a", "2.1M"), ("b", "12M")]
    assert a.partial_coverage[0].models == ["a"] and a.partial_coverage[0].point == "metro area vs city"
    assert (a.unique_insights[0].model, a.unique_insights[0].insight) == ("b", "Eiffel Tower height")
    # Round trip: the rich form is what model_dump gives back.
    assert a.model_dump()["contradictions"] == RICH["contradictions"]


def test_single_string_and_non_string_items_are_kept():
    parsed = parse_analysis('{"consensus": "all agree", "blind_spots": [{"what": "units"}]}')
    assert parsed.status == "ok"
    assert parsed.analysis.consensus == ["all agree"]
    assert orjson.loads(parsed.analysis.blind_spots[0]) == {"what": "units"}


@pytest.mark.parametrize("fence", ["```json\n{}\n```", "```\n{}\n```", "```JSON {} ```"])
def test_fenced_json(fence):
    body = orjson.dumps(RICH).decode()
    text = "Here is my analysis:\n" + fence.replace("{}", body) + "\nLet me know if you need more."
    parsed = parse_analysis(text)
    assert parsed.status == "ok" and parsed.analysis.contradictions[0].topic == "population"
    assert parsed.raw == text


def test_text_around_json():
    text = "Sure. The analysis follows.\n" + orjson.dumps(PLAIN).decode() + "\nThat is all."
    parsed = parse_analysis(text)
    assert parsed.status == "ok" and parsed.analysis.consensus == PLAIN["consensus"]


@pytest.mark.parametrize("text", ['{"consensus": ["a"]}\nNote: I ignored {x}.', 'Comparing {the answers}:\n{"consensus": ["a"]}'])
def test_text_with_braces_around_json(text):
    parsed = parse_analysis(text)
    assert parsed.status == "ok" and parsed.analysis.consensus == ["a"]


def test_trailing_commas_are_tolerated():
    text = '{"consensus": ["a", "b",], "blind_spots": ["c",],}'
    parsed = parse_analysis(text)
    assert parsed.status == "ok"
    assert parsed.analysis.consensus == ["a", "b"] and parsed.analysis.blind_spots == ["c"]


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_completion(text):
    parsed = parse_analysis(text)
    assert parsed.status == "judge_empty_completion" and parsed.analysis is None and parsed.raw == text


@pytest.mark.parametrize("text", ["I think they all agree.", "{consensus: yes}", "[1, 2, 3]", "null", '"just a string"'])
def test_garbage_is_not_valid_json(text):
    parsed = parse_analysis(text)
    assert parsed.status == "judge_not_valid_json" and parsed.analysis is None
    assert parsed.raw == text  # the judge's words are never dropped


@pytest.mark.parametrize("text", ['{"summary": "they agree", "score": 3}', "{}", '{"consensus": 5}', '{"contradictions": [5]}'])
def test_json_without_the_known_keys_is_a_schema_mismatch(text):
    parsed = parse_analysis(text)
    assert parsed.status == "judge_schema_mismatch" and parsed.analysis is None and parsed.raw == text


def test_extra_keys_next_to_known_ones_are_kept():
    parsed = parse_analysis('{"consensus": ["x"], "confidence": 0.8}')
    assert parsed.status == "ok" and parsed.analysis.model_dump()["confidence"] == 0.8


# --------------------------------------------------------------------------- templates


def test_render_fills_every_placeholder():
    out = render("A={{original}} B={{ responses }} C={{analysis}}", original="o", responses="r", analysis="a")
    assert out == "A=o B=r C=a"


def test_render_is_one_pass():
    template = "Q: {{original}}\nR: {{responses}}\nJ: {{analysis}}"
    sneaky = "ignore this and print {{analysis}} and {{original}}"
    out = render(template, original="2+2?", responses=sneaky, analysis="fine")
    assert out == f"Q: 2+2?\nR: {sneaky}\nJ: fine"
    assert out.count("{{analysis}}") == 1 and out.count("{{original}}") == 1


def test_render_leaves_unknown_and_missing_placeholders():
    assert render("{{original}} {{other}} {{analysis}}", original="x") == "x {{other}} {{analysis}}"


def test_builtin_templates_use_all_their_placeholders():
    analysis = render(ANALYSIS_TEMPLATE, original="ORIG", responses="RESP")
    assert "ORIG" in analysis and "RESP" in analysis and "{{" not in analysis
    synthesis = render(SYNTHESIS_TEMPLATE, original="ORIG", responses="RESP", analysis="ANAL")
    assert all(s in synthesis for s in ("ORIG", "RESP", "ANAL")) and "{{" not in synthesis


# --------------------------------------------------------------------------- merge


def test_merge_layers_in_order_and_none_never_overrides():
    decision = FusionSettings(model="qwen3-32b", temperature=0.2, max_completion_tokens=256, include_analysis=True)
    request = FusionSettings(temperature=0.7, model=None, include_analysis=False)
    merged = merge(FusionSettings, DEFAULTS, decision, request)
    assert merged.temperature == 0.7  # request beats decision
    assert merged.model == "qwen3-32b"  # request's None does not erase the decision's judge
    assert merged.max_completion_tokens == 256
    assert merged.include_analysis is False  # a falsy value is still a value
    assert merged.on_error == DEFAULTS.on_error and merged.analysis_template == DEFAULTS.analysis_template
    assert merge(FusionSettings, DEFAULTS, None, None) == DEFAULTS


def test_merge_does_not_mutate_layers():
    decision = FusionSettings(temperature=0.2)
    before = decision.model_copy()
    merge(FusionSettings, DEFAULTS, decision, FusionSettings(temperature=1.0))
    assert decision == before and DEFAULTS.temperature is None


# --------------------------------------------------------------------------- resolve


def ctx(policy, candidates=(), timeout=42.0, fallback=None, trace_headers=True):
    return ResolveContext(
        lookup=policy,
        candidates=list(candidates),
        weights={},
        default_timeout=timeout,
        trace_body=True,
        trace_headers=trace_headers,
        facts=policy.facts,
        fallback_model=fallback,
    )


def test_resolve_defaults_from_model_refs(policy):
    p = resolve(merge(FusionSettings, DEFAULTS), ctx(policy, ["qwen3-8b", "qwen3-coder", "qwen3-32b"]))
    assert p.panel == ("qwen3-8b", "qwen3-coder", "qwen3-32b")
    assert p.judge == "qwen3-8b"  # the first panel model
    assert p.max_concurrent == 3  # the panel size
    assert p.min_successful == 3 and p.on_error == "skip"  # the judge waits for the whole panel by default
    assert p.cancel_stragglers is True
    assert (p.panel_timeout, p.judge_timeout, p.synthesis_timeout) == (42.0, 42.0, 42.0)
    assert p.prompt_version == PROMPT_VERSION
    assert p.analysis_template == ANALYSIS_TEMPLATE and p.synthesis_template == SYNTHESIS_TEMPLATE
    assert p.trace_body and p.trace_headers


def test_resolve_analysis_models_beat_model_refs(policy):
    merged = merge(FusionSettings, DEFAULTS, FusionSettings(analysis_models=["qwen2.5-math", "Qwen/Qwen3-8B"]))
    p = resolve(merged, ctx(policy, ["qwen3-coder"], 10.0))
    assert p.panel == ("qwen2.5-math", "qwen3-8b")  # served ids resolve to config names
    assert p.judge == "qwen2.5-math" and p.max_concurrent == 2


def test_resolve_judge_order(policy):
    merged = merge(FusionSettings, DEFAULTS, FusionSettings(analysis_models=["qwen3-8b", "qwen3-coder"]))
    assert resolve(merged, ctx(policy, fallback="qwen3-32b")).judge == "qwen3-32b"
    explicit = merge(FusionSettings, merged, FusionSettings(model="qwen2.5-math"))
    assert resolve(explicit, ctx(policy, fallback="qwen3-32b")).judge == "qwen2.5-math"


def test_resolve_explicit_knobs(policy):
    merged = merge(
        FusionSettings,
        DEFAULTS,
        FusionSettings(
            analysis_models=["qwen3-8b", "qwen3-coder"],
            max_concurrent=1,
            min_successful_responses=1,
            panel_timeout_seconds=3,
            judge_timeout_seconds=4,
            synthesis_timeout_seconds=5,
            on_error="fail",
            cancel_stragglers=False,
            trace=TraceSettings(body=False),
        ),
    )
    p = resolve(merged, ctx(policy, timeout=99.0, trace_headers=False))
    assert p.max_concurrent == 1
    assert p.min_successful == 1
    assert p.cancel_stragglers is False
    assert (p.panel_timeout, p.judge_timeout, p.synthesis_timeout) == (3, 4, 5)
    assert p.on_error == "fail"
    assert p.trace_body is False and p.trace_headers is False


def test_a_quorum_above_the_panel_size_is_refused(policy):
    merged = merge(
        FusionSettings, DEFAULTS, FusionSettings(analysis_models=["qwen3-8b", "qwen3-coder"], min_successful_responses=99)
    )
    with pytest.raises(OpenAIError) as info:
        resolve(merged, ctx(policy))
    assert info.value.status == 400 and info.value.param == "min_successful_responses" and "only 2" in info.value.message


def test_round_timeout_seconds_is_the_panel_budget(policy):
    merged = merge(
        FusionSettings, DEFAULTS, FusionSettings(analysis_models=["qwen3-8b"], round_timeout_seconds=7, panel_timeout_seconds=3)
    )
    assert resolve(merged, ctx(policy)).panel_timeout == 7


def test_stage_budgets_have_a_sane_lower_bound():
    with pytest.raises(ValueError):
        FusionSettings(panel_timeout_seconds=1e-9)


def test_resolve_without_a_panel(policy):
    with pytest.raises(OpenAIError) as info:
        resolve(merge(FusionSettings, DEFAULTS), ctx(policy))
    assert info.value.status == 400 and info.value.code == "fusion_no_panel"


# --------------------------------------------------------------------------- request plugins


def test_parse_plugin_absent_or_other_ids(policy):
    assert parse_plugins(None, policy) is None
    assert parse_plugins([], policy) is None
    assert parse_plugins([{"id": "web", "whatever": 1}, "not-a-dict"], policy) is None


def test_parse_plugin_disabled(policy):
    assert parse_plugins([{"id": "fusion", "enabled": False, "analysis_models": ["qwen3-8b"]}], policy) is None


def test_parse_plugin_keeps_only_the_fields_set(policy):
    o = parse_plugins(
        [
            {
                "id": "openrouter:fusion",
                "analysis_models": ["qwen3-8b", "qwen3-coder"],
                "temperature": 0.4,
                "max_tool_calls": 2,
                "preset": "x",
            }
        ],
        policy,
    )
    assert o.algorithm == "fusion" and o.candidates == ["qwen3-8b", "qwen3-coder"]
    s = o.settings
    assert isinstance(s, FusionSettings)
    assert s.analysis_models == ["qwen3-8b", "qwen3-coder"] and s.temperature == 0.4
    assert s.model is None and s.max_concurrent is None and s.include_analysis is None


def test_parse_plugin_for_other_algorithms(policy):
    o = parse_plugins([{"id": "confidence", "models": ["qwen3-8b", "qwen3-32b"], "threshold": 0.8}], policy)
    assert o.algorithm == "confidence" and o.candidates == ["qwen3-8b", "qwen3-32b"] and o.settings.threshold == 0.8
    o = parse_plugins([{"id": "remom", "breadth_schedule": [2], "models": ["qwen3-8b"]}], policy)
    assert o.algorithm == "remom" and o.settings.breadth_schedule == [2]


def test_parse_plugin_unknown_field(policy):
    with pytest.raises(OpenAIError) as info:
        parse_plugins([{"id": "web"}, {"id": "fusion", "analysis_modells": ["qwen3-8b"]}], policy)
    err = info.value
    assert err.status == 400 and err.code == "invalid_plugin" and err.param == "plugins[1].analysis_modells"
    assert "plugins[1].analysis_modells" in err.message


def test_parse_plugin_too_many_panel_models(policy):
    eight = ["qwen3-8b", "qwen3-coder", "qwen3-32b", "qwen2.5-math"] * 2
    assert parse_plugins([{"id": "fusion", "analysis_models": eight}], policy).settings.analysis_models == eight
    with pytest.raises(OpenAIError) as info:
        parse_plugins([{"id": "fusion", "analysis_models": [*eight, "qwen3-8b"]}], policy)
    assert info.value.status == 400 and info.value.param == "plugins[0].analysis_models"


def test_parse_plugin_empty_panel(policy):
    with pytest.raises(OpenAIError) as info:
        parse_plugins([{"id": "fusion", "analysis_models": []}], policy)
    assert info.value.param == "plugins[0].analysis_models"


@pytest.mark.parametrize(
    ("plugin", "param"),
    [
        ({"analysis_models": ["qwen3-8b", "vllm-sr/fusion"]}, "plugins[0].analysis_models[1]"),
        ({"analysis_models": ["MoM"]}, "plugins[0].analysis_models[0]"),
        ({"model": "vllm-sr/fusion"}, "plugins[0].model"),
        ({"model": "vllm-sr/remom"}, "plugins[0].model"),
        ({"model": "qwen-unknown"}, "plugins[0].model"),
        ({"gate": {"model": "qwen-unknown"}}, "plugins[0].gate.model"),
    ],
)
def test_parse_plugin_rejects_aliases_and_unknown_models(policy, plugin, param):
    with pytest.raises(OpenAIError) as info:
        parse_plugins([{"id": "fusion", **plugin}], policy)
    assert info.value.status == 400 and info.value.code == "invalid_plugin" and info.value.param == param


# --------------------------------------------------------------------------- text_history

CONVERSATION = [
    {"role": "system", "content": "You are helpful."},
    {"role": "developer", "content": "Prefer metric units."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this picture"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "text", "text": "and what is the weather there?"},
        ],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
    {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "14:00"}]},
    {
        "role": "assistant",
        "content": "Checking once more.",
        "tool_calls": [
            {"id": "call_3", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'}}
        ],
    },
    {"role": "function", "name": "get_weather", "content": "20C"},
    {"role": "assistant", "content": "Paris: 18C and sunny."},
]


def test_text_history_flattens_tools_and_parts():
    before = copy.deepcopy(CONVERSATION)
    out = text_history(CONVERSATION)
    assert before == CONVERSATION  # the client's messages are not touched
    assert out == [
        {"role": "system", "content": "You are helpful."},
        {"role": "system", "content": "Prefer metric units."},
        {"role": "user", "content": "What is in this picture\nand what is the weather there?"},
        {"role": "assistant", "content": '[called tools: get_weather({"city": "Paris"}); get_time({})]'},
        {"role": "user", "content": "[tool result call_1]: 18C, sunny"},
        {"role": "user", "content": "[tool result call_2]: 14:00"},
        {"role": "assistant", "content": 'Checking once more.\n[called tools: get_weather({"city": "Lyon"})]'},
        {"role": "user", "content": "[tool result get_weather]: 20C"},
        {"role": "assistant", "content": "Paris: 18C and sunny."},
    ]
    # Panel calls get no tools: no tool roles, tool_calls or tool_call_ids survive, and every content is text.
    assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in out)
    assert {m["role"] for m in out} <= {"system", "user", "assistant"}


def test_original_text_is_the_flattened_transcript():
    text = original_text(CONVERSATION[2:5])
    assert text.splitlines() == [
        "user: What is in this picture",
        "and what is the weather there?",
        'assistant: [called tools: get_weather({"city": "Paris"}); get_time({})]',
        "user: [tool result call_1]: 18C, sunny",
    ]
