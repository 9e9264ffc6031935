"""Session fixtures of the real-model lane: one pair of llama-server processes for every test."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from router.llamacpp import LlamaCppError, LlmInstall, load_install
from tests.llm.lane import Lane, start_lane


@pytest.fixture(scope="session")
def llm_install() -> LlmInstall:
    try:
        return load_install()
    except LlamaCppError as exc:
        # `make test` builds the lane first and sets FUSION_ROUTER_REQUIRE_LLM=1: there a missing
        # install is a failure, not a skip.
        if os.environ.get("FUSION_ROUTER_REQUIRE_LLM") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def lane(llm_install: LlmInstall, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lane]:
    started = time.monotonic()
    lane = start_lane(tmp_path_factory.mktemp("llm"), llm_install)
    print(f"\nllm lane: started in {time.monotonic() - started:.1f}s (logs in {lane.stack.workdir})")
    try:
        yield lane
    finally:
        lane.stop()


@pytest.fixture(autouse=True)
def _fresh_records(request: pytest.FixtureRequest) -> None:
    if "lane" in request.fixturenames:
        request.getfixturevalue("lane").clear()
