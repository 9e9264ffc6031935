"""The looper interface and the services every deliberation algorithm shares.

An algorithm gets a ``LooperRun`` (the request, its resolved params, and ``call`` — one upstream model
call recorded in the run's ledger) and returns an ``Answer``; whatever happens, the runner asks it for
its typed trace. Algorithms never touch HTTP, Envoy or metrics themselves: the runner owns those, so an
algorithm is one module of deliberation logic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from router.looper.budget import TokenBudget
from router.looper.encoders import Encoders
from router.looper.errors import UpstreamError
from router.looper.ledger import Ledger
from router.looper.trace import LooperTrace
from router.openai.types import ChatCompletionRequest, Usage
from router.openai.upstream import TokenLogprob

DeltaSink = Callable[[dict[str, Any]], Awaitable[None]]
Progress = Callable[[str], Awaitable[None]]


@dataclass(slots=True)
class CallResult:
    model: str
    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    latency_ms: float = 0.0
    first_token_ms: float | None = None
    logprobs: list[TokenLogprob] | None = None  # per generated token, when the call asked for them


class Caller(Protocol):
    """Performs one upstream call to the model named ``model`` (a ``models[].name``)."""

    async def __call__(self, model: str, body: dict[str, Any], timeout: float, *, on_delta: DeltaSink | None) -> CallResult: ...


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What a config declares about a model that an algorithm may order or price by."""

    name: str
    param_size: float | None = None  # parameters, in billions
    input_price: float | None = None  # per million tokens
    output_price: float | None = None


@dataclass(slots=True)
class LooperRun:
    """One deliberation. ``on_delta`` is set when the client streams: a call made with
    ``stream=True`` relays its deltas straight to it; ``progress`` writes SSE comment lines."""

    request: ChatCompletionRequest
    raw: dict[str, Any]
    params: Any  # the algorithm's resolved params
    decision: str
    request_id: str
    caller: Caller
    facts: Callable[[str], ModelFacts]
    ledger: Ledger = field(default_factory=Ledger)
    # Local embedding / entailment models (grounding, self-consistency, debate); None when the
    # process has no classifier runtime.
    encoders: Encoders | None = None
    on_delta: DeltaSink | None = None
    progress: Progress | None = None
    budget: TokenBudget = field(init=False)

    def __post_init__(self) -> None:
        self.budget = TokenBudget(None, self.ledger)  # the runner sets the limit (max_total_tokens)

    @property
    def streaming(self) -> bool:
        return self.on_delta is not None

    async def call(self, model: str, body: dict[str, Any], timeout: float, *, stage: str, stream: bool = False) -> CallResult:
        """One model call, recorded: counted, its usage summed per stage, its failure kept with its reason."""
        self.ledger.calls += 1
        try:
            result = await self.caller(model, body, timeout, on_delta=self.on_delta if stream else None)
        except UpstreamError as exc:
            self.ledger.fail(model, stage, exc.reason, exc.message)
            raise
        self.ledger.record(model, stage, result.usage)
        if self.budget.limited:
            self.budget.note(body, result.content, result.usage.total_tokens)
        return result

    async def say(self, text: str) -> None:
        if self.progress is not None:
            await self.progress(text)


@dataclass(slots=True)
class Answer:
    """What the client gets: the final call's content or tool calls, and a short outcome label for
    headers and metrics (``fused``, ``gated``, ``accepted``, ``exhausted``, ``synthesized`` ...)."""

    content: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str
    outcome: str
    streamed: bool = False  # the final call's deltas already went to the client


class Looper(ABC):
    name: ClassVar[str]

    def __init__(self, run: LooperRun):
        self.run = run

    @abstractmethod
    async def execute(self) -> Answer:
        """Deliberate. Raise ``StageFailure`` when the run cannot produce an answer."""

    @abstractmethod
    def trace(self) -> LooperTrace:
        """The typed trace of what happened so far (called after success and after failure)."""

    def headers(self) -> dict[str, str]:
        """Algorithm-specific response headers (documented in the header registry)."""
        return {}
