"""One table of signal types (router/config/signals.py): every other list derives from it, and a
signal implementation that is not in it fails here instead of validating and never running."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import router.signals
from router.config import parse_config
from router.config.schema import RuleLeaf, Signals
from router.config.signals import (
    BY_SECTION,
    LEAF_TYPES,
    ML_SECTIONS,
    SIGNAL_SECTIONS,
    SIGNAL_TYPES,
    ModelSignalCommon,
)
from router.signals import runtime
from router.signals.base import Signal
from router.signals.ml import ModelSignal
from router.signals.registry import build_signals, implementation

ROOT = Path(__file__).resolve().parents[2]


def test_schema_sections_and_rule_leaves_come_from_the_table():
    assert list(Signals.model_fields) == [t.section for t in SIGNAL_TYPES]
    for t in SIGNAL_TYPES:
        assert typing.get_args(Signals.model_fields[t.section].annotation) == (t.spec,)
    assert typing.get_args(RuleLeaf.model_fields["type"].annotation) == LEAF_TYPES == tuple(t.leaf for t in SIGNAL_TYPES)
    assert {t.leaf: t.section for t in SIGNAL_TYPES} == SIGNAL_SECTIONS
    assert runtime.ML_SECTIONS == ML_SECTIONS == tuple(t.section for t in SIGNAL_TYPES if t.model_backed)


@pytest.mark.parametrize("t", SIGNAL_TYPES, ids=lambda t: t.section)
def test_each_row_names_a_matching_implementation(t):
    cls = implementation(t)
    assert issubclass(cls, Signal) and cls.type == t.leaf
    assert issubclass(cls, ModelSignal) == t.model_backed == (not cls.cheap)
    assert issubclass(t.spec, ModelSignalCommon) == t.model_backed


def test_every_signal_implementation_is_in_the_table():
    """A new signal module without a row would validate in no config and never run: fail here."""
    found = set()
    for info in pkgutil.iter_modules(router.signals.__path__):
        module = importlib.import_module(f"router.signals.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(cls, Signal)
                and cls.__module__ == module.__name__
                and not inspect.isabstract(cls)
                and "type" in cls.__dict__
            ):
                found.add(f"{cls.__module__}:{cls.__name__}")
    assert found == {t.implementation for t in SIGNAL_TYPES}


def test_runtime_leaves_are_the_ones_the_loader_accepts():
    cfg = parse_config(
        {
            "backends": [{"name": "b", "endpoint": "http://127.0.0.1:1"}],
            "models": [{"name": "m", "backend": "b"}],
            "routing": {
                "signals": {
                    "keywords": [{"name": "k", "keywords": ["x"]}],
                    "complexity": [{"name": "c", "hard": ["a"], "easy": ["b"], "threshold": 0.1}],
                    "domains": [{"name": "d", "categories": [{"name": "law", "mmlu_categories": ["law"]}]}],
                }
            },
        }
    )

    class FakeRuntime:
        pass

    built = build_signals(cfg.routing.signals, FakeRuntime())
    for t in SIGNAL_TYPES:
        for spec in getattr(cfg.routing.signals, t.section):
            assert built[f"{t.leaf}:{spec.name}"].leaf_keys() == {f"{t.leaf}:{n}" for n in spec.leaf_names()}
    assert built["complexity:c"].leaf_keys() == {"complexity:c", "complexity:c:hard", "complexity:c:medium", "complexity:c:easy"}
    assert built["domain:d"].leaf_keys() == {"domain:d", "domain:law"}


def test_model_backed_modules_load_only_when_a_config_uses_one():
    code = (
        "import sys\n"
        "from router.config import parse_config\n"
        "from router.signals.registry import build_signals\n"
        "cfg = parse_config({'backends': [{'name': 'b', 'endpoint': 'http://127.0.0.1:1'}],"
        " 'models': [{'name': 'm', 'backend': 'b'}],"
        " 'routing': {'signals': {'keywords': [{'name': 'k', 'keywords': ['x']}], 'language': [{'name': 'fr'}]}}})\n"
        "build_signals(cfg.routing.signals)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('onnxruntime', 'router.signals.ml', 'classifiers'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_section_lookup_covers_the_table():
    assert set(BY_SECTION) == {t.section for t in SIGNAL_TYPES}
