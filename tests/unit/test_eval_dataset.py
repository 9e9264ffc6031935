"""Dataset and suite files: bad input names the file and line; the bundled sets load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router.eval.command import DATA_DIR, DEFAULT_DATASETS
from router.eval.configs import ConfigurationError, EvalSuite, configurations_from_flags, load_suite
from router.eval.dataset import DatasetError, load_datasets, load_items
from router.eval.scoring import pattern_verdicts, rubric_score

GOOD = {"id": "a1", "prompt": "What is 2 + 2?", "scorer": "number", "answer": "4"}


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "b", "prompt": "x", "scorer": "number"', "items.jsonl:3: not valid JSON"),
        ('["not", "an", "object"]', "items.jsonl:3: expected a JSON object, got list"),
        ('{"id": "b", "prompt": "x", "scorer": "number"}', "items.jsonl:3: scorer 'number' needs an 'answer'"),
        ('{"id": "b", "prompt": "x", "scorer": "number", "answer": "four"}', "items.jsonl:3: "),
        ('{"id": "b", "prompt": "x", "scorer": "choice", "answer": "E", "choices": ["a", "b"]}', "not one of the letters A, B"),
        (
            '{"id": "b", "prompt": "x", "scorer": "rubric", "rubric": [{"id": "n1", "text": "bad", "weight": -1}]}',
            "items.jsonl:3: scorer 'rubric' needs a rubric with at least one positive criterion",
        ),
        (
            '{"id": "b", "prompt": "x", "scorer": "rubric", "rubric": [{"id": "p1", "text": "t", "weight": 1, "pattern": "(("}]}',
            "pattern is not a valid regex",
        ),
        ('{"id": "b", "prompt": "x", "scorer": "fuzzy", "answer": "1"}', "items.jsonl:3: scorer:"),
        (
            '{"id": "a1", "prompt": "x", "scorer": "number", "answer": "1"}',
            "items.jsonl:3: duplicate item id 'a1' (first on line 1)",
        ),
        ('{"id": "b", "prompt": "x", "scorer": "number", "answer": "1", "colour": "red"}', "items.jsonl:3: colour"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = _write(tmp_path, [json.dumps(GOOD), "# a comment", line])
    with pytest.raises(DatasetError) as err:
        load_items(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read"):
        load_items(tmp_path / "nope.jsonl")
    with pytest.raises(DatasetError, match="no items"):
        load_items(_write(tmp_path, ["", "# only a comment"]))


def test_limit_takes_the_first_items_of_each_slice(tmp_path: Path) -> None:
    lines = [json.dumps({**GOOD, "id": f"{s}{n}", "slice": s}) for s in ("x", "y") for n in range(5)]
    items = load_datasets([_write(tmp_path, lines)], limit=2)
    assert [i.id for i in items] == ["x0", "x1", "y0", "y1"]
    assert [i.id for i in load_datasets([tmp_path / "items.jsonl"], slices={"y"}, limit=1)] == ["y0"]


def test_bundled_datasets_load_and_their_references_score_full_marks() -> None:
    items = load_datasets([DATA_DIR / name for name in DEFAULT_DATASETS])
    counts: dict[str, int] = {}
    for item in items:
        counts[item.slice] = counts.get(item.slice, 0) + 1
    assert counts == {"arithmetic": 100, "capitals": 100, "mmlu": 100, "open": 24}
    for item in items:
        if item.scorer == "rubric":
            # every open item's reference answer passes its own patterns: the rubric is consistent
            verdicts = pattern_verdicts(item.rubric, item.reference or "")
            assert verdicts is not None and rubric_score(item.rubric, verdicts) == 1.0, item.id
            assert any(c.weight < 0 for c in item.rubric), f"{item.id}: no penalty criterion"


def test_suite_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "suite.yaml"
    bad.write_text("configurations:\n  - {name: a, model: m}\n  - {name: a, model: n}\n")
    with pytest.raises(ConfigurationError, match=r"suite.yaml: .*names must be unique: a"):
        load_suite(bad)
    bad.write_text("configurations:\n  - {name: a}\n")
    with pytest.raises(ConfigurationError, match=r"suite.yaml: configurations.0.model: Field required"):
        load_suite(bad)
    bad.write_text("configurations: [\n")
    with pytest.raises(ConfigurationError, match=r"suite.yaml:\d+: not valid YAML"):
        load_suite(bad)
    bad.write_text("baseline: zz\nconfigurations:\n  - {name: a, model: m, extra_body: {model: x}}\n")
    with pytest.raises(ConfigurationError, match="extra_body may not set"):
        load_suite(bad)


def test_flags_build_solo_fusion_self_fusion_and_slug_configurations() -> None:
    configs = configurations_from_flags(solo=["a"], fusion=["a+b@j"], self_fusion=["a@j"], model=["remom=vllm-sr/remom"])
    by_name = {c.name: c for c in configs}
    assert by_name["a"].solo and by_name["a"].extra_body == {}
    plugin = {"id": "fusion", "analysis_models": ["a", "b"], "model": "j"}
    assert by_name["fusion(a+b@j)"].extra_body == {"plugins": [plugin]}
    assert by_name["self-fusion(a@j)"].extra_body["plugins"][0]["analysis_models"] == ["a", "a"]
    assert by_name["remom"].model == "vllm-sr/remom" and not by_name["remom"].solo


def test_fingerprint_changes_with_what_is_sent() -> None:
    suite = EvalSuite(configurations=configurations_from_flags(solo=["a"], fusion=[], self_fusion=[], model=[]))
    config = suite.configurations[0]
    before = config.fingerprint(suite)
    assert config.fingerprint(EvalSuite(max_tokens=99, configurations=[config])) != before
    assert config.model_copy(update={"extra_body": {"temperature": 1}}).fingerprint(suite) != before
    assert config.model_copy(update={"description": "notes only"}).fingerprint(suite) == before


def test_missing_key_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVAL_TEST_KEY", raising=False)
    suite = EvalSuite(api_key_env="EVAL_TEST_KEY")
    config = configurations_from_flags(solo=["m"], fusion=[], self_fusion=[], model=[])[0]
    with pytest.raises(ConfigurationError, match="environment variable EVAL_TEST_KEY"):
        suite.api_key_for(config)
    monkeypatch.setenv("EVAL_TEST_KEY", "sk-test")
    assert suite.api_key_for(config) == "sk-test"
    assert EvalSuite().api_key_for(config) == "unused"  # local endpoints need no key


def test_suite_examples_in_the_docs_and_the_bundled_suite_validate() -> None:
    import re

    import yaml

    root = Path(__file__).resolve().parents[2]
    blocks = re.findall(r"```yaml\n(.*?)```", (root / "docs" / "eval.md").read_text(), re.DOTALL)
    assert blocks
    for block in blocks:
        EvalSuite.model_validate(yaml.safe_load(block))
    suite = load_suite(DATA_DIR / "suites" / "local-llm.yaml")
    assert all(Path(d).exists() for d in suite.datasets) and suite.judge is not None
