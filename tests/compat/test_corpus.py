"""vLLM Semantic Router's own configs (tests/compat/reference): each loads, or fails only with
"not supported" messages naming the feature and where it is; the ones that load convert to the
router's layout and back unchanged, and route hand-checked prompts where their intent says."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from router.config import parse_config
from tests.compat.harness import REFERENCE, corpus_files, is_fragment, load

ROOT = Path(__file__).resolve().parents[2]
EXPECT = yaml.safe_load((Path(__file__).parent / "expectations.yaml").read_text())
FILES = corpus_files()
WHOLE = [f for f in FILES if not is_fragment(f)]
REFUSAL = re.compile(r"^\S.*: .+ is not supported by fusion-router \(.+\)$")


def test_the_corpus_is_all_there():
    # 42 configs as a user would hand them over (config/, recipes, e2e, deploy, the CLI template),
    # 3 of them overlays (e2e authz profiles), plus 62 fragments; the reference's license travels along.
    overlays = [f for f in FILES if is_fragment(f) and not f.startswith("config/fragments/")]
    assert (len(WHOLE), len(overlays), len(FILES) - len(WHOLE) - len(overlays)) == (39, 3, 62)
    assert (REFERENCE / "LICENSE").read_text().lstrip().startswith("Apache License")


@pytest.mark.parametrize("rel", FILES)
def test_loads_or_fails_only_as_not_supported(rel):
    cfg, report, problems = load(rel)
    assert report is not None and report.format == "vllm-sr v0.3"
    if cfg is None:
        assert problems, rel
        others = [p for p in problems if not REFUSAL.match(p)]
        assert not others, f"{rel}: problems other than 'not supported': {others}"
        assert report.unsupported == problems
    else:
        assert not report.unsupported
        # Nothing is dropped without a line: every ignored setting says why.
        assert all(re.match(r"^\S.*: ignored \(.+\)$", line) for line in report.ignored), report.ignored


def test_which_files_load_is_pinned():
    loads = sorted(f for f in WHOLE if load(f)[0] is not None)
    assert loads == sorted(EXPECT["loads"])
    fragments = sorted(f for f in FILES if is_fragment(f) and load(f)[0] is not None)
    assert fragments == sorted(EXPECT["fragments_load"])


@pytest.mark.parametrize("rel", sorted(EXPECT["loads"]) + sorted(EXPECT["fragments_load"]))
def test_converted_layout_reads_back_the_same(rel):
    cfg, _, _ = load(rel)
    native = cfg.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    again = parse_config(yaml.safe_load(yaml.safe_dump(native)), f"{rel} (converted)")
    assert again.model_dump() == cfg.model_dump()


def test_refusals_name_feature_and_place():
    _, _, problems = load("config/config.yaml")
    text = "\n".join(problems)
    for where, feature in (
        ("routing.signals.fact_check", "fact_check signals"),
        ("routing.signals.keywords[0].method", "keyword method 'bm25'"),
        ("providers.models[1].api_format", "api_format 'anthropic'"),
        ("recipes", "recipes and entrypoints"),
    ):
        assert f"{where}: {feature} is not supported by fusion-router" in text
    _, _, problems = load("config/fragments/algorithm/selection/router-dc.yaml")
    assert problems == [
        (
            "routing.decisions[0].algorithm.type: algorithm 'router_dc' is not supported by fusion-router "
            "(a learned selection algorithm (dual-contrastive))"
        )
    ]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FUSION_ROUTER_MODELS_DIR": str(ROOT / "models")}
    return subprocess.run(
        [sys.executable, "-m", "router.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_check_config_says_which_format_and_summarises(tmp_path):
    good = REFERENCE / "e2e/config/config.multi-endpoint.yaml"
    res = _cli("check-config", "--skip-model-check", "--summary", str(good))
    assert res.returncode == 0, res.stderr
    assert f"{good}: ok, read as vllm-sr v0.3 (2 models, 2 decisions" in res.stdout
    assert f"{good}: used:" in res.stdout and f"{good}: ignored:" in res.stdout and f"{good}: unsupported: none" in res.stdout
    assert "warning: global.router.clear_route_cache: ignored" in res.stderr

    bad = REFERENCE / "config/recipes/accuracy/config.yaml"
    res = _cli("check-config", "--skip-model-check", "--summary", str(bad))
    assert res.returncode == 2
    assert "algorithm 'workflows' is not supported by fusion-router" in res.stderr
    assert f"{bad}: unsupported: 1" in res.stdout and f"{bad}: format: vllm-sr v0.3" in res.stdout


def test_convert_writes_the_router_layout(tmp_path):
    src = REFERENCE / "e2e/config/config.multi-endpoint.yaml"
    out = tmp_path / "converted.yaml"
    res = _cli("convert", str(src), "-o", str(out))
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    assert text.startswith(f"# fusion-router layout of {src} (read as vllm-sr v0.3)")
    data = yaml.safe_load(text)
    assert {b["endpoint"] for b in data["backends"]} == {"http://127.0.0.1:8100", "http://127.0.0.1:8200"}
    assert data["models"][0]["served_model_id"] == "Qwen/Qwen2.5-14B-Instruct"
    check = _cli("check-config", "--skip-model-check", str(out))
    assert check.returncode == 0 and "read as fusion-router" in check.stdout, check.stderr
    refused = _cli("convert", str(REFERENCE / "config/config.yaml"))
    assert refused.returncode == 2 and "is not supported by fusion-router" in refused.stderr


# --------------------------------------------------------------------------- routing


def _needs_models() -> None:
    if not (ROOT / "models" / "embedding" / "model.onnx").is_file():
        pytest.skip("classifier models not built (make models)")


ROUTES = [(rel, case) for rel, cases in EXPECT["routes"].items() for case in cases]


@pytest.mark.parametrize(("rel", "case"), ROUTES, ids=[f"{r}:{c['prompt'][:24]}" for r, c in ROUTES])
def test_hand_checked_prompts_route_as_intended(rel, case, tmp_path, monkeypatch):
    """Through `fusion-router classify`'s own function (a v0.3 file, as the user has it)."""
    from router.classify import classify

    _needs_models()
    monkeypatch.setenv("FUSION_ROUTER_MODELS_DIR", str(ROOT / "models"))
    path = REFERENCE / rel
    data = yaml.safe_load(path.read_text())
    if isinstance(data, dict) and list(data) == ["config"]:  # a Helm values file: the config it carries
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data["config"]))
    out = asyncio.run(classify(str(path), case["prompt"]))
    assert (out["decision"], out["route_to"]) == (case["decision"], case["model"]), out["signals"]


def test_classify_cli_reads_a_v03_file():
    _needs_models()
    res = _cli("classify", "--config", str(REFERENCE / "e2e/config/config.multi-endpoint.yaml"), "Please refactor this function")
    assert res.returncode == 0, res.stderr
    out = yaml.safe_load(res.stdout)
    assert (out["decision"], out["route_to"]) == ("code_to_dev", "qwen14b-dev")


def test_migration_doc_matches_the_corpus_and_the_catalogue():
    from router.config.reference import (
        UNSUPPORTED_ALGORITHMS,
        UNSUPPORTED_LEAF_TYPES,
        UNSUPPORTED_PLUGINS,
        UNSUPPORTED_SIGNAL_SECTIONS,
    )

    doc = (ROOT / "docs" / "migration.md").read_text()
    whole = [load(f)[0] is not None for f in WHOLE]
    overlays = [f for f in FILES if is_fragment(f) and not f.startswith("config/fragments/")]
    fragments = [load(f)[0] is not None for f in FILES if f.startswith("config/fragments/")]
    assert f"| whole configs ({len(whole)}) | {sum(whole)} | {len(whole) - sum(whole)} | 0 |" in doc
    assert f"| overlays (e2e authz profiles, {len(overlays)}) | 0 | {len(overlays)} | 0 |" in doc
    assert (
        f"| fragments ({len(fragments)}, each inside a small skeleton) | {sum(fragments)} | {len(fragments) - sum(fragments)} | 0 |"
        in doc
    )
    for name in [*UNSUPPORTED_SIGNAL_SECTIONS, *UNSUPPORTED_LEAF_TYPES, *UNSUPPORTED_PLUGINS, *UNSUPPORTED_ALGORITHMS]:
        assert f"`{name}`" in doc, f"docs/migration.md does not list {name}"
