"""The docs stay true: the header table is generated from the registry, README config examples validate."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from router.config import parse_config
from router.extproc.headers import REGISTRY, markdown_table

ROOT = Path(__file__).resolve().parents[2]
BASE = {"backends": [{"name": "b", "endpoint": "http://127.0.0.1:1"}], "models": [{"name": "m", "backend": "b"}]}


def test_headers_doc_is_generated_from_the_registry():
    assert (ROOT / "docs" / "headers.md").read_text() == markdown_table(), "run: make docs-headers"
    names = [h.name for h in REGISTRY]
    assert len(names) == len(set(names)) and all(n.startswith(("x-vsr-", "x-request-id")) for n in names)


def test_readme_config_examples_validate():
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    checked = 0
    for block in blocks:
        data = yaml.safe_load(block)
        if not isinstance(data, dict) or "routing" not in data:
            continue
        parse_config({**BASE, **data})
        checked += 1
    assert checked >= 2


def test_readme_starts_with_the_two_commands():
    head = (ROOT / "README.md").read_text().split("\n\n")[1]
    assert "make run" in head and "make test" in head


def test_loopers_doc_is_generated_from_the_registry():
    from router.looper.docs import BEGIN, markdown

    text = (ROOT / "docs" / "loopers.md").read_text()
    assert text[text.index(BEGIN) :] == markdown(), "regenerate: fusion-router loopers (the part after the marker)"
