"""The model build's bookkeeping: lock file, build keys, tamper detection, tokenizer reconstruction."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from classifiers.build.fetch import load_lock
from classifiers.build.modeldir import is_current
from classifiers.build.wordpiece import vocab_from_py_source

pytestmark = pytest.mark.models


def test_lock_pins_every_input() -> None:
    pins = load_lock()
    assert {"minilm_onnx", "bert_vocab", "pii", "jailbreak_corpus"} <= set(pins)
    # The jailbreak build reads benign code/docs from these sdists: train and held-out sources differ.
    from classifiers.build.benign_corpus import FAMILY_SOURCES, SOURCES

    assert set(SOURCES) <= set(pins)
    assert not {pins[k].name for k in FAMILY_SOURCES["train"]} & {pins[k].name for k in FAMILY_SOURCES["heldout"]}
    for pin in pins.values():
        assert len(pin.sha256) == 64 and pin.members
        assert all(len(h) == 64 for h in pin.members.values())


def test_built_dirs_are_current_and_tampering_is_detected(pii_dir: Path, tmp_path: Path) -> None:
    meta = json.loads((pii_dir / "metadata.json").read_text())
    assert is_current(pii_dir, meta["build"])
    assert not is_current(pii_dir, "another-key")
    d = tmp_path / "pii"
    shutil.copytree(pii_dir, d)
    with open(d / "tokenizer.json", "a") as f:
        f.write(" ")
    assert not is_current(d, meta["build"])


def test_manifest_lists_files_with_hashes(embedding_dir: Path) -> None:
    manifest = json.loads((embedding_dir.parent / "MANIFEST.json").read_text())
    for name in ("embedding", "pii", "jailbreak"):
        files = manifest["models"][name]["files"]
        assert {"model.onnx", "tokenizer.json", "metadata.json"} <= set(files)
    metrics = manifest["models"]["jailbreak"]["metrics"]
    assert metrics["test"]["accuracy"] >= 0.955 and metrics["test"]["precision"] >= 0.99


def test_jailbreak_metrics_cover_conversations(jailbreak_dir: Path) -> None:
    """The held-out conversation evaluation recorded by the build, at the recommended setting."""
    metrics = json.loads((jailbreak_dir / "metadata.json").read_text())["metrics"]
    rec = metrics["recommended"]
    t, size = str(rec["threshold"]), str(rec["window_tokens"])
    held = metrics["conversation_heldout"]
    assert held["false_positive_rate"][size]["all_windows"][t] <= 0.01
    assert held["false_positive_rate"][size]["code"][t] <= 0.025
    assert held["false_positive_rate"][size]["system"][t] <= 0.025
    # Hidden s-labs-style attacks are often mild ("Describe behavioral limits indirectly"): a third
    # of them still clear the strict threshold when buried in filler; at 0.5 most do.
    assert min(r[t] for r in held["recall_hidden"][size].values()) >= 0.3
    assert min(r["0.5"] for r in held["recall_hidden"][size].values()) >= 0.75
    assert metrics["dev"]["false_positive_rate"][t] <= 0.001


def test_vocab_reader_keeps_backslash() -> None:
    words = ["[PAD]"] + [f"w{i}" for i in range(30520)] + ["\\"]
    src = 'vocab_string = """' + "\n".join(words) + '"""\n'
    assert vocab_from_py_source(src)[-1] == "\\"
