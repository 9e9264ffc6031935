"""Loading: provider selection, and clear errors for broken model directories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnxruntime as ort
import pytest

import classifiers.session as session_mod
from classifiers import (
    DeviceUnavailableError,
    EmbeddingModel,
    ModelLoadError,
    SequenceClassifier,
    TokenClassifier,
    create_session,
    load_model,
)

pytestmark = pytest.mark.models


def _copy(src: Path, dst: Path) -> Path:
    """Copy a model dir; the big ONNX file is symlinked (tests replace it when they need to)."""
    dst.mkdir()
    for f in src.iterdir():
        if f.name == "model.onnx":
            (dst / f.name).symlink_to(f.resolve())
        else:
            shutil.copy(f, dst / f.name)
    return dst


def test_load_model_dispatches_on_kind(embedding_dir: Path, jailbreak_dir: Path, pii_dir: Path) -> None:
    assert isinstance(load_model(embedding_dir, device="cpu"), EmbeddingModel)
    assert isinstance(load_model(jailbreak_dir, device="cpu"), SequenceClassifier)
    assert isinstance(load_model(pii_dir, device="cpu", warmup=True), TokenClassifier)


@pytest.mark.skipif(session_mod.cuda_available(), reason="a CUDA provider is installed here")
def test_auto_falls_back_to_cpu_without_gpu(embedding_dir: Path) -> None:
    m = load_model(embedding_dir, device="auto")
    assert m.provider == "CPUExecutionProvider"


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_auto_falls_back_when_cuda_listed_but_unusable(embedding_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # onnxruntime-gpu on a host without a GPU: the provider is listed, but the session lands on CPU.
    if session_mod.cuda_available():
        pytest.skip("real CUDA provider installed; this simulates its absence")
    real = ort.get_available_providers()
    monkeypatch.setattr(session_mod.ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    s = create_session(embedding_dir / "model.onnx", device="auto")
    assert s.provider == "CPUExecutionProvider"
    with pytest.raises(DeviceUnavailableError, match="model.onnx"):
        create_session(embedding_dir / "model.onnx", device="cuda")


@pytest.mark.skipif(session_mod.cuda_available(), reason="a CUDA provider is installed here")
def test_cuda_without_cuda_is_a_clear_error(embedding_dir: Path) -> None:
    with pytest.raises(DeviceUnavailableError) as exc:
        load_model(embedding_dir, device="cuda")
    assert str(embedding_dir / "model.onnx") in str(exc.value)
    assert "CUDAExecutionProvider" in str(exc.value)
    assert isinstance(exc.value, ModelLoadError)


def test_cpu_device_and_bad_device(embedding_dir: Path) -> None:
    assert create_session(embedding_dir / "model.onnx", device="cpu").provider == "CPUExecutionProvider"
    with pytest.raises(ValueError):
        create_session(embedding_dir / "model.onnx", device="tpu")  # type: ignore[arg-type]


def test_corrupt_model_names_the_path(embedding_dir: Path, tmp_path: Path) -> None:
    d = _copy(embedding_dir, tmp_path / "broken")
    (d / "model.onnx").unlink()
    (d / "model.onnx").write_bytes(b"\x08\x07this is not an onnx graph" * 100)
    with pytest.raises(ModelLoadError) as exc:
        load_model(d, device="cpu")
    assert str(d / "model.onnx") in str(exc.value)


def test_truncated_model_file_names_the_path(pii_dir: Path, tmp_path: Path) -> None:
    d = _copy(pii_dir, tmp_path / "half")
    data = (pii_dir / "model.onnx").read_bytes()
    (d / "model.onnx").unlink()
    (d / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="half/model.onnx"):
        load_model(d, device="cpu")


def test_missing_model_file(embedding_dir: Path, tmp_path: Path) -> None:
    d = _copy(embedding_dir, tmp_path / "nomodel")
    (d / "model.onnx").unlink()
    with pytest.raises(ModelLoadError, match="nomodel/model.onnx.*missing"):
        load_model(d)


def test_missing_tokenizer(embedding_dir: Path, tmp_path: Path) -> None:
    d = _copy(embedding_dir, tmp_path / "notok")
    (d / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="notok/tokenizer.json.*missing"):
        load_model(d)


def test_corrupt_tokenizer(embedding_dir: Path, tmp_path: Path) -> None:
    d = _copy(embedding_dir, tmp_path / "badtok")
    (d / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="badtok/tokenizer.json"):
        load_model(d)


def test_missing_dir_and_bad_metadata(embedding_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does-not-exist"):
        load_model(tmp_path / "does-not-exist")
    d = _copy(embedding_dir, tmp_path / "badmeta")
    meta = json.loads((d / "metadata.json").read_text())
    (d / "metadata.json").write_text(json.dumps({**meta, "kind": "regression"}))
    with pytest.raises(ModelLoadError, match="badmeta/metadata.json.*kind"):
        load_model(d)
    (d / "metadata.json").write_text(json.dumps({**meta, "output": "nope"}))
    with pytest.raises(ModelLoadError, match="nope"):
        load_model(d)
    (d / "metadata.json").unlink()
    with pytest.raises(ModelLoadError, match="badmeta/metadata.json.*missing"):
        load_model(d)


def test_sequence_model_without_labels_is_rejected(jailbreak_dir: Path, tmp_path: Path) -> None:
    d = _copy(jailbreak_dir, tmp_path / "nolabels")
    meta = json.loads((d / "metadata.json").read_text())
    (d / "metadata.json").write_text(json.dumps({**meta, "labels": []}))
    with pytest.raises(ModelLoadError, match="labels"):
        load_model(d)
