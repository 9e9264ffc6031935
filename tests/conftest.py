"""Suite-wide isolation: logging configured by one test (an in-process CLI run, a log-capturing
fixture) must not leak into the next one."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from router.observability import logging as router_logging

# A logger cached in one test would keep that test's stream and processors for the rest of the run.
router_logging.CACHE_LOGGERS = False


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
