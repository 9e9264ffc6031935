"""Knobs of one simulated backend, and parsing them from CLI strings and YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

Mode = Literal["normal", "error", "hang", "drop_midstream", "broken_json_judge", "judge_json"]
MODES: tuple[str, ...] = get_args(Mode)


class SimBackendSpec(BaseModel):
    """One simulated OpenAI-compatible backend (think: one vLLM pod)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    port: int = Field(0, ge=0, le=65535, description="0 picks a free port")
    models: list[str] = Field(default_factory=lambda: ["sim-model"], min_length=1)
    latency_ms: float = Field(0.0, ge=0, description="delay before the first byte")
    tokens_per_second: float = Field(
        0.0, ge=0, validation_alias=AliasChoices("tokens_per_second", "tps"), description="0 = unpaced"
    )
    max_tokens: int = Field(32, ge=1, description="natural answer length; requests may only cap it")
    fail_rate: float = Field(0.0, ge=0, le=1)
    fail_status: int = Field(500, ge=400, le=599)
    mode: Mode = "normal"
    strict_models: bool = False
    seed: int = Field(0, description="seeds the fail_rate RNG so failures repeat run to run")
    # Token logprobs (when a request asks for them): every chosen token gets probability
    # ``confidence`` (per model via ``model_confidence``), so avg_logprob, margin and hybrid scores
    # all come out at about that value; self-verification prompts are answered with it too.
    confidence: float = Field(0.9, gt=0, le=1)
    model_confidence: dict[str, float] = Field(default_factory=dict)
    logprobs: bool = Field(True, description="false: ignore logprobs requests, like servers that lack them")
    # Which calls the fault modes (error, hang, drop_midstream, malformed) hit: every call, only
    # looper judge calls (a prompt asking for "consensus"), or only final calls (a looper's
    # synthesis, whose system message carries the panel's answers).
    fault_on: Literal["all", "judge", "final"] = "all"
    malformed: Literal["none", "choices_strings", "usage_string", "int_delta", "not_json", "huge_line"] = "none"
    answer_bytes: int = Field(0, ge=0, description="pad the answer's content to this many bytes")
    # A scripted panel member: every plain answer (not judge, verdict or tool call) is this text.
    fixed_answer: str = ""
    # Scripted per question: the first key found in the request's first user message picks the answer.
    answers: dict[str, str] = Field(default_factory=dict)
    echo_auth: bool = Field(False, description="error texts quote the Authorization header, like careless providers")
    write_chunk_bytes: int = Field(0, ge=0, description="send a non-streamed body in pieces of this size")
    request_log_size: int = Field(100, ge=0)

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        # The CLI packs several models into one value: models=a;b
        if isinstance(value, str):
            return [m.strip() for m in value.replace(",", ";").split(";") if m.strip()]
        return value


def parse_backend_arg(text: str) -> SimBackendSpec:
    """Parse `name=a,port=8001,models=m1;m2,latency_ms=20,tps=200`."""
    fields: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"backend option {item!r} is not key=value")
        fields[key.strip()] = value.strip()
    return SimBackendSpec.model_validate(fields)


def load_config(path: str | Path) -> list[SimBackendSpec]:
    """A YAML file holding a list of specs, or a mapping with a `backends` list."""
    data = yaml.safe_load(Path(path).read_text())
    if isinstance(data, dict):
        data = data.get("backends")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of backend specs (or a mapping with `backends`)")
    return [SimBackendSpec.model_validate(item) for item in data]
