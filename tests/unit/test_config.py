"""Config loading: the default config loads; every error names the file, the field path and the expectation."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from router.config import ConfigError, load_config, parse_config
from router.config.schema import KeywordSignal

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "config" / "default.yaml"


@pytest.fixture(scope="module")
def base() -> dict:
    return yaml.safe_load(DEFAULT.read_text())


def write(tmp_path: Path, data: dict | str, name: str = "router.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def problems_of(tmp_path: Path, data: dict | str) -> tuple[Path, ConfigError]:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return path, info.value


def decision(data: dict, name: str) -> dict:
    return next(d for d in data["routing"]["decisions"] if d["name"] == name)


def at(data: dict, name: str) -> str:
    """The field path of a decision by name (the shipped config grows; indexes move)."""
    i = next(i for i, d in enumerate(data["routing"]["decisions"]) if d["name"] == name)
    return f"routing.decisions[{i}]"


def minimal(**extra) -> dict:
    cfg = {
        "backends": [{"name": "b1", "endpoint": "http://127.0.0.1:9"}],
        "models": [{"name": "m1", "backend": "b1"}, {"name": "m2", "backend": "b1"}],
    }
    cfg.update(extra)
    return cfg


# --------------------------------------------------------------------------- the shipped config


def test_default_config_loads_with_its_sections():
    cfg = load_config(DEFAULT)
    models = {m.name for m in cfg.models}
    assert {"qwen3-8b", "qwen3-coder", "qwen2.5-math", "qwen3-32b"} <= models
    assert cfg.default_model in models
    by_name = {d.name: d for d in cfg.routing.decisions}
    assert {"deep_research", "coding", "math", "general"} <= set(by_name)
    research = by_name["deep_research"]
    assert research.is_looper and research.algorithm.fusion.model in models
    assert by_name["general"].rules is None  # the catch-all
    assert all(r.model in models for d in cfg.routing.decisions for r in d.modelRefs)
    assert cfg.global_.integrations.looper.fusion.model_names == ["vllm-sr/fusion"]
    # Models name their backend; served ids default to the name only when unset.
    coder = next(m for m in cfg.models if m.name == "qwen3-coder")
    assert coder.served_id == "Qwen/Qwen3-Coder-30B-A3B-Instruct"


def test_parse_config_accepts_a_minimal_config_with_defaults():
    cfg = parse_config(minimal())
    assert cfg.global_.router.auto_model_names == ["vllm-sr/auto", "auto", "MoM"]
    assert cfg.global_.router.cluster_header == "x-vsr-cluster"
    assert cfg.models[0].served_id == "m1"
    assert cfg.routing.decisions == []


# --------------------------------------------------------------------------- schema errors


def test_unknown_key_names_the_field_path_and_starts_with_the_file(tmp_path, base):
    data = copy.deepcopy(base)
    decision(data, "coding")["priorty"] = 5
    path, err = problems_of(tmp_path, data)
    assert str(err).startswith(f"{path}: ")
    assert err.problems == [f"{at(data, 'coding')}.priorty: unknown key (not part of the schema; check the spelling)"]
    assert err.source == str(path)


def test_unknown_key_in_global_uses_the_yaml_spelling(tmp_path, base):
    data = copy.deepcopy(base)
    data["global"]["router"]["max_bodybytes"] = 10
    _, err = problems_of(tmp_path, data)
    assert any(p.startswith("global.router.max_bodybytes: unknown key") for p in err.problems), err.problems


def test_unknown_key_inside_a_nested_rule_hides_discriminator_tags(tmp_path, base):
    data = copy.deepcopy(base)
    decision(data, "coding")["rules"]["conditions"][0]["nme"] = "x"
    _, err = problems_of(tmp_path, data)
    assert f"{at(data, 'coding')}.rules.conditions[0].nme: unknown key" in str(err)
    assert ".leaf" not in str(err) and ".node" not in str(err)


@pytest.mark.parametrize(
    ("name", "mutate", "expected"),
    [
        ("deep_research", lambda d: d["algorithm"]["fusion"].__setitem__("modle", "x"), ".algorithm.fusion.modle: unknown key"),
        (
            "coding",
            lambda d: d["plugins"][0]["configuration"].__setitem__("mod", "x"),
            ".plugins[0].configuration.mod: unknown key",
        ),
        (
            "deep_research",
            lambda d: d["algorithm"]["fusion"].__setitem__("temperature", "hot"),
            ".algorithm.fusion.temperature: Input should be a valid number",
        ),
        (
            "coding",
            lambda d: d["plugins"][0]["configuration"].__setitem__("mode", "append"),
            ".plugins[0].configuration.mode: Input should be 'insert' or 'replace'",
        ),
        ("general", lambda d: d.__setitem__("algorithm", {"type": "static", "fusion": {}}), ".algorithm.fusion: unknown key"),
    ],
    ids=["algorithm.fusion", "plugins", "fusion-type", "plugin-enum", "static-extra"],
)
def test_unknown_key_under_a_tagged_union_names_the_real_path(tmp_path, base, name, mutate, expected):
    data = copy.deepcopy(base)
    mutate(decision(data, name))
    _, err = problems_of(tmp_path, data)
    assert any(p.startswith(at(data, name) + expected) for p in err.problems), err.problems


def test_wrong_type_names_path_and_expectation(tmp_path, base):
    data = copy.deepcopy(base)
    data["global"]["router"]["max_body_bytes"] = "big"
    path, err = problems_of(tmp_path, data)
    assert len(err.problems) == 1
    problem = err.problems[0]
    assert problem.startswith("global.router.max_body_bytes: ")
    assert "integer" in problem and "'big'" in problem
    assert str(err) == f"{path}: {problem}"


def test_wrong_type_for_a_list_section(tmp_path, base):
    data = copy.deepcopy(base)
    data["backends"] = "vllm-small"
    _, err = problems_of(tmp_path, data)
    assert any(p.startswith("backends: ") and "list" in p for p in err.problems), err.problems


def test_bad_enum_value_lists_the_choices(tmp_path, base):
    data = copy.deepcopy(base)
    data["routing"]["signals"]["keywords"][0]["operator"] = "XOR"
    _, err = problems_of(tmp_path, data)
    (problem,) = err.problems
    assert problem.startswith("routing.signals.keywords[0].operator: ")
    assert "'any'" in problem and "'XOR'" in problem


def test_missing_required_field(tmp_path):
    data = minimal()
    del data["models"][0]["backend"]
    _, err = problems_of(tmp_path, data)
    assert "models[0].backend: required field is missing" in err.problems


def test_several_problems_are_all_reported(tmp_path, base):
    data = copy.deepcopy(base)
    decision(data, "coding")["priorty"] = 1
    decision(data, "math")["descriptionn"] = "x"
    _, err = problems_of(tmp_path, data)
    assert any(p.startswith(f"{at(data, 'coding')}.priorty") for p in err.problems)
    assert any(p.startswith(f"{at(data, 'math')}.descriptionn") for p in err.problems)
    assert str(err).count(f"{err.source}: ") == len(err.problems) >= 2


def test_top_level_must_be_a_mapping(tmp_path):
    path, err = problems_of(tmp_path, "- just\n- a list\n")
    assert str(err).startswith(f"{path}: (top level): expected a mapping")


def test_not_with_two_conditions(tmp_path, base):
    data = copy.deepcopy(base)
    decision(data, "coding")["rules"] = {
        "operator": "NOT",
        "conditions": [{"type": "keyword", "name": "code_keywords"}, {"type": "keyword", "name": "math_keywords"}],
    }
    _, err = problems_of(tmp_path, data)
    assert any(p.startswith(f"{at(data, 'coding')}.rules: ") and "NOT takes exactly one condition" in p for p in err.problems), (
        err.problems
    )


def test_not_with_one_condition_is_fine():
    cfg = parse_config(
        minimal(
            routing={
                "signals": {"keywords": [{"name": "k", "keywords": ["x"]}]},
                "decisions": [
                    {
                        "name": "d",
                        "rules": {"operator": "NOT", "conditions": [{"type": "keyword", "name": "k"}]},
                        "modelRefs": [{"model": "m1"}],
                    }
                ],
            }
        )
    )
    assert cfg.routing.decisions[0].rules.operator == "NOT"


@pytest.mark.parametrize(("alias", "normal"), [("OR", "any"), ("AND", "all"), ("NOR", "none"), ("all", "all")])
def test_keyword_operator_aliases_normalise(alias, normal):
    cfg = parse_config(minimal(routing={"signals": {"keywords": [{"name": "k", "operator": alias, "keywords": ["x"]}]}}))
    assert cfg.routing.signals.keywords[0].operator == normal
    assert KeywordSignal(name="k", operator=alias, keywords=["x"]).operator == normal


def test_invalid_regex_keyword_is_a_config_error(tmp_path):
    data = minimal(
        routing={
            "signals": {"keywords": [{"name": "k", "method": "regex", "keywords": ["ok", "(unclosed"]}]},
            "decisions": [{"name": "d", "rules": {"type": "keyword", "name": "k"}, "modelRefs": [{"model": "m1"}]}],
        }
    )
    _, err = problems_of(tmp_path, data)
    assert any(p.startswith("routing.signals.keywords[0].keywords[1]") for p in err.problems), err.problems


def test_empty_keyword_is_a_config_error(tmp_path):
    data = minimal(routing={"signals": {"keywords": [{"name": "k", "method": "substring", "keywords": ["python", ""]}]}})
    _, err = problems_of(tmp_path, data)
    assert any(p.startswith("routing.signals.keywords[0].keywords[1]") for p in err.problems), err.problems


# --------------------------------------------------------------------------- cross references


def test_model_naming_an_unknown_backend(tmp_path, base):
    data = copy.deepcopy(base)
    data["models"][1]["backend"] = "vllm-nowhere"
    _, err = problems_of(tmp_path, data)
    (problem,) = err.problems
    assert problem.startswith("models[1].backend: unknown backend 'vllm-nowhere'")
    assert "vllm-coder" in problem  # the expectation lists what exists


def test_decision_model_ref_to_unknown_model(tmp_path, base):
    data = copy.deepcopy(base)
    decision(data, "math")["modelRefs"] = [{"model": "gpt-9"}]
    _, err = problems_of(tmp_path, data)
    assert any(p.startswith(f"{at(data, 'math')}.modelRefs[0].model: unknown model 'gpt-9'") for p in err.problems)


def test_rule_leaf_naming_an_undeclared_signal_says_which_section(tmp_path, base):
    data = copy.deepcopy(base)
    decision(data, "coding")["rules"]["conditions"][0] = {"type": "keyword", "name": "code_kw"}
    _, err = problems_of(tmp_path, data)
    (problem,) = err.problems
    assert problem.startswith(f"{at(data, 'coding')}.rules.conditions[0].name: ")
    assert "'code_kw'" in problem and "routing.signals.keywords" in problem
    assert "code_keywords" in problem  # the declared names help fix the typo


def test_rule_leaf_of_a_type_with_no_signals_declared(tmp_path, base):
    data = copy.deepcopy(base)
    data["routing"]["signals"].pop("language", None)
    decision(data, "math")["rules"] = {"type": "language", "name": "english"}
    _, err = problems_of(tmp_path, data)
    (problem,) = err.problems
    assert problem.startswith(f"{at(data, 'math')}.rules.name: ")
    assert "routing.signals.language" in problem and "none" in problem


def test_rule_leaf_type_must_match_the_section(tmp_path, base):
    # The name exists, but as a keyword signal, not a context signal.
    data = copy.deepcopy(base)
    decision(data, "math")["rules"] = {"type": "context", "name": "code_keywords"}
    _, err = problems_of(tmp_path, data)
    assert any("routing.signals.context" in p for p in err.problems), err.problems


@pytest.mark.parametrize(
    ("where", "what"),
    [
        (("backends",), "backend"),
        (("models",), "model"),
        (("routing", "decisions"), "decision"),
        (("routing", "signals", "keywords"), "signal"),
    ],
    ids=["backend", "model", "decision", "signal"],
)
def test_duplicate_names(tmp_path, base, where, what):
    data = copy.deepcopy(base)
    items = data
    for key in where:
        items = items[key]
    first = items[0]["name"]
    items.append(copy.deepcopy(items[0]))
    _, err = problems_of(tmp_path, data)
    prefix = f"{'.'.join(where)}[{len(items) - 1}].name: duplicate {what} name {first!r}"
    assert any(p.startswith(prefix) for p in err.problems), err.problems


def test_default_model_unknown(tmp_path, base):
    data = copy.deepcopy(base)
    data["default_model"] = "qwen-nope"
    _, err = problems_of(tmp_path, data)
    (problem,) = err.problems
    assert problem.startswith("default_model: unknown model 'qwen-nope'")


def test_model_may_not_take_a_reserved_alias(tmp_path, base):
    data = copy.deepcopy(base)
    data["models"][0]["name"] = "vllm-sr/fusion"
    data["default_model"] = "qwen3-32b"
    decision(data, "general")["modelRefs"] = [{"model": "qwen3-32b"}]
    f = decision(data, "deep_research")
    f["modelRefs"] = [{"model": "qwen3-32b"}]
    f["algorithm"]["fusion"]["analysis_models"] = ["qwen3-32b", "qwen3-coder"]
    _, err = problems_of(tmp_path, data)
    assert any(p.startswith("models[0].name: 'vllm-sr/fusion' is a reserved") for p in err.problems), err.problems


def test_fusion_slug_as_judge(tmp_path, base):
    data = copy.deepcopy(base)
    decision(data, "deep_research")["algorithm"]["fusion"]["model"] = "vllm-sr/fusion"
    _, err = problems_of(tmp_path, data)
    (problem,) = err.problems
    assert problem.startswith(f"{at(data, 'deep_research')}.algorithm.fusion.model: unknown judge model 'vllm-sr/fusion'")
    assert "looper slug and can never be a judge model" in problem


def test_fusion_slug_as_panel_model(tmp_path, base):
    data = copy.deepcopy(base)
    decision(data, "deep_research")["algorithm"]["fusion"]["analysis_models"] = ["qwen3-8b", "vllm-sr/fusion"]
    _, err = problems_of(tmp_path, data)
    (problem,) = err.problems
    assert problem.startswith(
        f"{at(data, 'deep_research')}.algorithm.fusion.analysis_models[1]: unknown panel model 'vllm-sr/fusion'"
    )
    assert "looper slug and can never be a panel model" in problem


def test_plain_unknown_judge_does_not_mention_slugs(tmp_path, base):
    data = copy.deepcopy(base)
    decision(data, "deep_research")["algorithm"]["fusion"]["model"] = "qwen-typo"
    _, err = problems_of(tmp_path, data)
    (problem,) = err.problems
    assert "unknown judge model 'qwen-typo'" in problem and "slug" not in problem


def test_fusion_decision_without_a_panel(tmp_path, base):
    data = copy.deepcopy(base)
    f = decision(data, "deep_research")
    f["modelRefs"] = []
    del f["algorithm"]["fusion"]["analysis_models"]
    _, err = problems_of(tmp_path, data)
    (problem,) = err.problems
    assert problem.startswith(f"{at(data, 'deep_research')}.algorithm.fusion.analysis_models: a Fusion decision needs a panel")


def test_fusion_panel_from_model_refs_alone_is_fine(base):
    data = copy.deepcopy(base)
    del decision(data, "deep_research")["algorithm"]["fusion"]["analysis_models"]
    cfg = parse_config(data)
    assert next(d for d in cfg.routing.decisions if d.name == "deep_research").algorithm.fusion.analysis_models is None


def test_routing_decision_without_models(tmp_path, base):
    data = copy.deepcopy(base)
    decision(data, "math")["modelRefs"] = []
    _, err = problems_of(tmp_path, data)
    assert err.problems == [f"{at(data, 'math')}.modelRefs: a routing decision needs at least one model"]


def test_block_decision_needs_no_models():
    cfg = parse_config(
        minimal(
            routing={
                "signals": {"keywords": [{"name": "bad", "keywords": ["evil"]}]},
                "decisions": [{"name": "guard", "rules": {"type": "keyword", "name": "bad"}, "plugins": [{"type": "block"}]}],
            }
        )
    )
    assert cfg.routing.decisions[0].plugin_block is not None


# --------------------------------------------------------------------------- file-level errors


def test_yaml_syntax_error_reports_line_and_column(tmp_path):
    text = "version: 1\nbackends:\n  - {name: b1, endpoint: http://x:1\nmodels: []\n"
    path, err = problems_of(tmp_path, text)
    (problem,) = err.problems
    assert str(err).startswith(f"{path}: line ")
    assert "invalid YAML" in problem
    # The unclosed flow mapping is found on a later line than where it started.
    line = int(problem.split("line ", 1)[1].split(",", 1)[0])
    col = int(problem.split("column ", 1)[1].split(":", 1)[0])
    assert line >= 3 and col >= 1


def test_yaml_bad_indentation_points_at_the_line(tmp_path):
    text = "version: 1\nglobal:\n  router:\n    log_prompts: true\n   bad: 1\n"
    _, err = problems_of(tmp_path, text)
    assert err.problems[0].startswith("line 5, column ")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: cannot read file")


def test_directory_is_unreadable(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: cannot read file")


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\n# caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: file is not UTF-8 text"


# --------------------------------------------------------------------------- the CLI


def _check(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "router.cli", "check-config", *map(str, files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_cli_good_and_bad(tmp_path, base):
    data = copy.deepcopy(base)
    decision(data, "coding")["priorty"] = 1
    bad = write(tmp_path, data, "bad.yaml")

    good = _check(DEFAULT)
    assert good.returncode == 0, good.stderr
    counts = f"({len(base['models'])} models, {len(base['routing']['decisions'])} decisions)"
    assert f"{DEFAULT}: ok, read as fusion-router {counts}" in good.stdout

    res = _check(DEFAULT, bad)
    assert res.returncode == 2
    assert f"{bad}: {at(data, 'coding')}.priorty: unknown key" in res.stderr
    assert f"{DEFAULT}: ok" in res.stdout  # the good file is still checked and reported


def test_check_config_names_a_missing_model_directory(tmp_path, base):
    data = copy.deepcopy(base)
    data.setdefault("global", {})["classifiers"] = {"models_dir": str(tmp_path / "nowhere")}
    path = write(tmp_path, data, "nomodels.yaml")
    res = _check(path)
    assert res.returncode == 2
    assert (
        f"{path}: routing.signals.jailbreak[0].model: model directory {tmp_path / 'nowhere' / 'jailbreak'} is missing"
        in res.stderr
    )
    skipped = subprocess.run(
        [sys.executable, "-m", "router.cli", "check-config", "--skip-model-check", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert skipped.returncode == 0, skipped.stderr


def test_guard_signals_cannot_skip_on_error(tmp_path, base):
    data = copy.deepcopy(base)
    data["routing"]["signals"]["jailbreak"][0]["on_error"] = "skip"
    _, err = problems_of(tmp_path, data)
    assert any(
        p.startswith("routing.signals.jailbreak[0].on_error: 'prompt_injection' is read by the guard 'block_jailbreak'")
        for p in err.problems
    ), err.problems
