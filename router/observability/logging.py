"""structlog setup: JSON lines in production, readable console lines in development.

Every line goes to stderr in the same format: structlog events and the standard library's records
(grpc, aiohttp, asyncio) alike. Values of keys that name credentials are replaced before rendering,
as a safety net under the rule that callers never log API keys; prompt text is only logged by the
pipeline's ``request_prompt`` debug event, which ``global.router.log_prompts`` gates.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

REDACTED = "[redacted]"
# Lower-cased keys (log fields, or header names inside a logged mapping) whose values are never logged.
SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api_key",
        "api-key",
        "x-api-key",
        "apikey",
        "password",
        "secret",
        "token",
        "access_token",
        "looper_secret",
        "cookie",
        "set-cookie",
        "x-vsr-looper-token",
    }
)


def _scrub(value: Any, depth: int = 0) -> Any:
    if depth > 3:
        return value
    if isinstance(value, MutableMapping):
        return {
            k: (REDACTED if isinstance(k, str) and k.lower() in SENSITIVE_KEYS else _scrub(v, depth + 1))
            for k, v in value.items()
        }
    return value


def redact_secrets(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: blank credential-looking fields, at the top level and in logged mappings."""
    for key in list(event):
        if key.lower() in SENSITIVE_KEYS:
            event[key] = REDACTED
        elif isinstance(event[key], MutableMapping):
            event[key] = _scrub(event[key])
    return event


def _dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def processors(fmt: str) -> list[Any]:
    renderer = (
        structlog.processors.JSONRenderer(serializer=_dumps) if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
        renderer,
    ]


# Cached loggers are faster, but keep the configuration of their first use; the test suite turns this
# off because it reconfigures logging per test.
CACHE_LOGGERS = True


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at write time. Loggers are cached on first use, so pinning
    the stream object of configure time would keep writing into a replaced (or closed) stderr, such as
    a test runner's capture or an embedding application's redirect."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(fmt: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog and the standard library's root logger to write ``fmt`` lines to ``stream``
    (stderr by default) at ``level``; libraries stay at INFO and above even at ``debug``."""
    out: Any = stream or _CurrentStderr()
    lvl = getattr(logging, level.upper(), logging.INFO)
    chain = processors(fmt)
    # Standard-library records (grpc, aiohttp, asyncio) rendered by the same chain: one format per stream.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *chain[:-1]],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, chain[-1]],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(lvl, logging.INFO))  # the libraries' debug chatter stays off at --log-level debug
    structlog.configure(
        processors=chain,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=CACHE_LOGGERS,
    )
