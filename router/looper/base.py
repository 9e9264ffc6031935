"""The looper interface: every deliberation algorithm takes a ``LooperRun`` and returns an ``Outcome``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from router.config.schema import Backend, ModelSpec
from router.decisions.policy import Policy
from router.looper.client import CallResult, ModelClient
from router.looper.settings import FusionParams
from router.openai.errors import OpenAIError
from router.openai.types import ChatCompletionRequest, Usage

Emit = Callable[[bytes], Awaitable[None]]
DeltaSink = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class LooperRun:
    """Everything one deliberation needs. ``on_delta`` is set when the client streams: the final
    call's deltas go straight to it; ``progress`` writes SSE comment lines while earlier stages run."""

    request: ChatCompletionRequest
    raw: dict[str, Any]
    params: FusionParams
    policy: Policy
    client: ModelClient
    decision: str
    request_id: str
    on_delta: DeltaSink | None = None
    progress: Callable[[str], Awaitable[None]] | None = None
    forward_headers: dict[str, str] = field(default_factory=dict)

    def model(self, name: str) -> tuple[ModelSpec, Backend]:
        spec = self.policy.models[name]
        return spec, self.policy.backend_of(spec)

    async def call(self, name: str, body: dict[str, Any], timeout: float, *, stream: bool = False) -> CallResult:
        spec, backend = self.model(name)
        return await self.client.complete(
            spec, backend, body, timeout=timeout, on_delta=self.on_delta if stream else None, extra_headers=self.forward_headers
        )

    async def say(self, text: str) -> None:
        if self.progress is not None:
            await self.progress(text)


@dataclass(slots=True)
class Outcome:
    content: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str
    usage: Usage
    trace: dict[str, Any]
    headers: dict[str, str]
    error: OpenAIError | None = None


class Looper(ABC):
    name: str

    @abstractmethod
    async def run(self, run: LooperRun) -> Outcome: ...
