"""``global.sessions``: where a conversation's identity comes from and where its model is remembered."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from router.config.base import Strict

KeySource = Literal["header", "metadata", "user", "first_turns"]
HEADER_NAME = r"^[a-z0-9!#$%&'*+.^_`|~-]+$"
DEFAULT_SOURCES: tuple[KeySource, ...] = ("header", "metadata", "user", "first_turns")


class SessionSettings(Strict):
    # Tried in order; the first that the request carries names the session.
    key_from: list[KeySource] = Field(default_factory=lambda: list(DEFAULT_SOURCES), min_length=1)
    header: str = Field(default="x-session-id", pattern=HEADER_NAME)
    metadata_key: str = Field(default="session_id", min_length=1, max_length=64)  # the OpenAI request's metadata.<key>
    first_turns: int = Field(default=1, ge=1, le=16)  # user turns (and what precedes them) hashed into a key
    max_key_length: int = Field(default=256, ge=8, le=4096)  # a longer id is refused with 400
    ttl_seconds: float = Field(default=3600.0, gt=0, le=30 * 86400)
    max_entries: int = Field(default=100_000, gt=0)  # the in-process store's LRU bound
    store: Literal["memory", "redis"] = "memory"  # redis: global.redis, shared by every replica

    @field_validator("key_from")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each key source may appear once")
        return value
