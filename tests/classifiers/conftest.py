"""Fixtures for the classifier tests: the real models from ``make models`` (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from classifiers import EmbeddingModel, SequenceClassifier, TokenClassifier, load_model

REPO = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("FUSION_ROUTER_MODELS", REPO / "models"))


def model_dir(name: str) -> Path:
    d = MODELS / name
    if not (d / "metadata.json").is_file():
        pytest.skip(f"{d} not built: run `make models` (python scripts/build_models.py --out models)")
    return d


@pytest.fixture(scope="session")
def embedding_dir() -> Path:
    return model_dir("embedding")


@pytest.fixture(scope="session")
def jailbreak_dir() -> Path:
    return model_dir("jailbreak")


@pytest.fixture(scope="session")
def pii_dir() -> Path:
    return model_dir("pii")


@pytest.fixture(scope="session")
def embedder(embedding_dir: Path) -> EmbeddingModel:
    m = load_model(embedding_dir, device="cpu")
    assert isinstance(m, EmbeddingModel)
    return m


@pytest.fixture(scope="session")
def jailbreak(jailbreak_dir: Path) -> SequenceClassifier:
    m = load_model(jailbreak_dir, device="cpu")
    assert isinstance(m, SequenceClassifier)
    return m


@pytest.fixture(scope="session")
def pii(pii_dir: Path) -> TokenClassifier:
    m = load_model(pii_dir, device="cpu")
    assert isinstance(m, TokenClassifier)
    return m
