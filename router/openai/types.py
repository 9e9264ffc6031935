"""Request and response models for ``/v1/chat/completions``.

Requests allow unknown fields (clients send vendor extras the backend must still receive); the router
keeps the parsed JSON dict next to the typed view and re-serialises the dict, so nothing is lost.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class TextPart(Open):
    type: str
    text: str | None = None


class FunctionCall(Open):
    name: str | None = None
    arguments: str | None = None


class ToolCall(Open):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The message's text; multimodal arrays contribute their text parts only."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if p.text)


def _tool_text(tool: dict[str, Any]) -> str:
    """A tool definition's human-readable parts: name, description and parameter descriptions."""
    fn = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(fn, dict):
        return ""
    parts = [str(fn.get("name") or ""), str(fn.get("description") or "")]
    props = (fn.get("parameters") or {}).get("properties") if isinstance(fn.get("parameters"), dict) else None
    if isinstance(props, dict):
        parts += [str(v.get("description")) for v in props.values() if isinstance(v, dict) and v.get("description")]
    return " ".join(p for p in parts if p)


class StreamOptions(Open):
    include_usage: bool = False


class ChatCompletionRequest(Open):
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1)
    plugins: list[dict[str, Any]] | None = None

    @field_validator("stream", mode="before")
    @classmethod
    def _strict_bool(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, bool):
            raise ValueError("must be a boolean")
        return False if value is None else value

    def last_user_text(self) -> str:
        for msg in reversed(self.messages):
            if msg.role == "user":
                return msg.text()
        return ""

    def user_texts(self) -> list[str]:
        return [m.text() for m in self.messages if m.role == "user"]

    def role_texts(self) -> list[tuple[str, str]]:
        """(role, text) for everything a model will read: every message's text parts, the arguments of
        tool calls in assistant turns, and the tool definitions (role ``tools``), which a model reads
        as instructions too."""
        out: list[tuple[str, str]] = []
        for m in self.messages:
            text = m.text()
            if m.tool_calls:
                args = " ".join(f"{c.function.name or ''}({c.function.arguments or ''})" for c in m.tool_calls)
                text = f"{text}\n{args}" if text else args
            out.append((m.role, text))
        described = [_tool_text(t) for t in self.tools or []]
        if any(described):
            out.append(("tools", "\n".join(d for d in described if d)))
        return out

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )


# --------------------------------------------------------------------------- what the router writes


class OutFunctionCall(BaseModel):
    name: str = ""
    arguments: str = ""


class OutToolCall(BaseModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: OutFunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[OutToolCall] | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = "stop"


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


class ChatCompletion(BaseModel):
    """A chat completion the router answers itself. A looper's trace rides along as a top-level
    object named after the algorithm (``fusion``, ``confidence``, ...), set through ``extra``."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(default_factory=completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage | None = None


class ToolCallDelta(BaseModel):
    index: int = 0
    id: str | None = None
    type: Literal["function"] | None = None
    function: OutFunctionCall | None = None


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "fusion-router"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
