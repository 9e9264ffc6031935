"""A request's session key: from the configured header, ``metadata.<key>``, ``user``, or a hash of the
conversation's first turns, scoped by tenant and hashed (never kept or logged in clear)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router.openai.errors import OpenAIError
from router.sessions.settings import SessionSettings

_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII: no spaces, controls or binary


@dataclass(frozen=True, slots=True)
class SessionKey:
    digest: str  # sha256 hex of tenant, source and value: what stores and logs see
    source: str  # header | metadata | user | first_turns

    @property
    def short(self) -> str:
        return self.digest[:12]


def _checked(value: str, what: str, param: str, limit: int) -> str:
    if len(value) > limit or not _PRINTABLE.match(value):
        raise OpenAIError(
            400,
            f"The session id in {what} must be 1-{limit} visible ASCII characters (no spaces, control characters or binary).",
            "invalid_session_id",
            param=param,
        )
    return value


def validate_header(settings: SessionSettings, headers: Mapping[str, str]) -> None:
    """A session header the router would read must be usable; checked on every request while any
    decision keeps sessions, so a bad id is a 400 whatever the prompt."""
    value = headers.get(settings.header)
    if value is not None and "header" in settings.key_from:
        _checked(value, f"the `{settings.header}` header", settings.header, settings.max_key_length)


def _turns_text(messages: list[Any], turns: int) -> str | None:
    """The conversation up to and including its ``turns``-th user message (system prompts included):
    the same on every later turn of the conversation."""
    out: list[str] = []
    seen = 0
    for m in messages:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, list):
            content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        out.append(f"{m.get('role')}\x1f{content if isinstance(content, str) else ''}")
        if m.get("role") == "user":
            seen += 1
            if seen == turns:
                return "\x1e".join(out)
    return None  # fewer user turns than configured: not yet a conversation to pin by hash


def session_key(
    settings: SessionSettings, headers: Mapping[str, str], raw: dict[str, Any], tenant: str | None
) -> SessionKey | None:
    for source in settings.key_from:
        value: str | None = None
        if source == "header":
            value = headers.get(settings.header)
            if value is not None:
                _checked(value, f"the `{settings.header}` header", settings.header, settings.max_key_length)
        elif source == "metadata":
            meta = raw.get("metadata")
            item = meta.get(settings.metadata_key) if isinstance(meta, dict) else None
            if item is not None:
                where = f"metadata.{settings.metadata_key}"
                if not isinstance(item, str):
                    raise OpenAIError(400, f"`{where}` must be a string session id.", "invalid_session_id", param=where)
                value = _checked(item, f"`{where}`", where, settings.max_key_length)
        elif source == "user":
            user = raw.get("user")
            if isinstance(user, str) and user:
                value = _checked(user, "`user`", "user", settings.max_key_length)
        else:
            messages = raw.get("messages")
            value = _turns_text(messages, settings.first_turns) if isinstance(messages, list) else None
        if value:
            h = hashlib.sha256(f"{tenant or ''}\x00{source}\x00{value}".encode("utf-8", "surrogatepass"))
            return SessionKey(h.hexdigest(), source)
    return None
