"""What the router accepts from an upstream OpenAI-compatible server, as typed models.

Every answer a looper reads is validated here: a backend that sends ``choices: ["x"]``, a string where a
token count belongs, or an integer as delta content is a typed ``invalid_response`` failure of that
call, not a crash somewhere later. Unknown fields are ignored (servers add their own); only what the
router uses is kept, so a deeply nested vendor extra never reaches a serialiser.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router.openai.types import Usage


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TopLogprob(_Lenient):
    token: str = ""
    logprob: float


class TokenLogprob(_Lenient):
    token: str = ""
    logprob: float
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(_Lenient):
    content: list[TokenLogprob] | None = None


class UpstreamFunction(_Lenient):
    name: str | None = None
    arguments: str | None = None


class UpstreamToolCall(_Lenient):
    index: int | None = None
    id: str | None = None
    type: str | None = "function"
    function: UpstreamFunction = Field(default_factory=UpstreamFunction)


class UpstreamMessage(_Lenient):
    role: str | None = None
    content: str | None = None
    tool_calls: list[UpstreamToolCall] | None = None


class UpstreamChoice(_Lenient):
    index: int = 0
    message: UpstreamMessage = Field(default_factory=UpstreamMessage)
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class UpstreamUsage(_Lenient):
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int | None = Field(default=None, ge=0)

    def typed(self) -> Usage:
        total = self.total_tokens if self.total_tokens is not None else self.prompt_tokens + self.completion_tokens
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens, total_tokens=total)


class UpstreamCompletion(_Lenient):
    choices: list[UpstreamChoice] = Field(min_length=1)
    usage: UpstreamUsage | None = None


class UpstreamDelta(_Lenient):
    role: str | None = None
    content: str | None = None
    tool_calls: list[UpstreamToolCall] | None = None


class UpstreamChunkChoice(_Lenient):
    index: int = 0
    delta: UpstreamDelta = Field(default_factory=UpstreamDelta)
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class UpstreamErrorBody(_Lenient):
    message: str = ""
    type: str | None = None
    code: str | int | None = None


class UpstreamChunk(_Lenient):
    choices: list[UpstreamChunkChoice] = Field(default_factory=list)
    usage: UpstreamUsage | None = None
    error: UpstreamErrorBody | str | None = None


__all__ = [
    "ChoiceLogprobs",
    "TokenLogprob",
    "TopLogprob",
    "UpstreamChoice",
    "UpstreamChunk",
    "UpstreamCompletion",
    "UpstreamErrorBody",
    "UpstreamUsage",
    "ValidationError",
]
