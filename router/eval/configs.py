"""What an eval run compares: configurations as data (a YAML/JSON suite file and/or CLI flags).

A configuration is a name, the ``model`` to send (a model name, an auto alias, a looper slug such
as ``vllm-sr/fusion``) and an optional ``extra_body`` merged into the request (for example a Fusion
plugin; self-fusion is the same model twice in ``analysis_models``). Each may point at its own
endpoint and read its key from its own environment variable, so one run can compare a user's vLLM
pods, a provider and the local models.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_ENDPOINT = "http://127.0.0.1:8801/v1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+@:/()=-]*$")


class ConfigurationError(ValueError):
    """A suite or flag problem, naming the file (or flag) and field."""


class EndpointSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: str | None = Field(None, description="OpenAI base URL, e.g. http://127.0.0.1:8801/v1")
    api_key_env: str | None = Field(None, description="environment variable holding the API key")


class JudgeSpec(EndpointSpec):
    """The model that grades open (rubric) items; its tokens are not charged to the configurations."""

    model: str = Field(min_length=1)
    max_tokens: int = Field(256, ge=16)
    structured: bool = Field(True, description="ask for the verdict with a JSON-schema response_format")


class EvalConfiguration(EndpointSpec):
    name: str = Field(min_length=1)
    model: str = Field(min_length=1)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    solo: bool = Field(False, description="one model answering alone; the best solo is the baseline")
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    description: str | None = None

    @model_validator(mode="after")
    def _check(self) -> EvalConfiguration:
        if not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r}: use letters, digits and _.+@:/()=- (it keys the results file)")
        if "messages" in self.extra_body or "model" in self.extra_body:
            raise ValueError("extra_body may not set 'messages' or 'model' (the item and `model` do)")
        return self

    def fingerprint(self, suite: EvalSuite) -> str:
        """What makes a result reusable: the request this configuration sends (and its own endpoint,
        when it names one). The run's endpoint is left out on purpose: a local stack restarted on other
        ports must resume; a different server deserves a different ``--out``."""
        key = {
            "model": self.model,
            "extra_body": self.extra_body,
            "endpoint": self.endpoint,
            "max_tokens": self.max_tokens or suite.max_tokens,
            "temperature": suite.temperature if self.temperature is None else self.temperature,
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class EvalSuite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: str = DEFAULT_ENDPOINT
    api_key_env: str | None = None
    timeout_seconds: float = Field(300.0, gt=0)
    concurrency: int = Field(2, ge=1, le=256)
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0)
    judge: JudgeSpec | None = None
    baseline: str | None = Field(None, description="configuration to compare against (default: the best solo)")
    datasets: list[str] = Field(default_factory=list, description="JSONL files, relative to the suite file")
    configurations: list[EvalConfiguration] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> EvalSuite:
        names = [c.name for c in self.configurations]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"configuration names must be unique: {', '.join(dupes)}")
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not a configuration")
        return self

    def endpoint_for(self, spec: EndpointSpec) -> str:
        return (spec.endpoint or self.endpoint).rstrip("/")

    def key_env_for(self, spec: EndpointSpec) -> str | None:
        return spec.api_key_env or self.api_key_env

    def api_key_for(self, spec: EndpointSpec) -> str:
        """The key from the environment; a named variable that is unset is a configuration error."""
        env = self.key_env_for(spec)
        if env is None:
            return "unused"  # local endpoints take any key; the client insists on one
        value = os.environ.get(env)
        if not value:
            raise ConfigurationError(f"environment variable {env} (api_key_env) is not set")
        return value


def describe(err: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg'].removeprefix('Value error, ')}" for e in err.errors()
    )


def load_suite(path: str | Path) -> EvalSuite:
    """A suite file (YAML or JSON). Dataset paths in it are made relative to the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigurationError(f"{path}{where}: not valid YAML/JSON: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: expected a mapping with `configurations`")
    try:
        suite = EvalSuite.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(f"{path}: {describe(exc)}") from None
    suite.datasets = [str((path.parent / d).resolve()) if not Path(d).is_absolute() else d for d in suite.datasets]
    return suite


def _split_models(text: str, flag: str) -> list[str]:
    models = [m.strip() for m in text.split("+") if m.strip()]
    if not models:
        raise ConfigurationError(f"{flag} {text!r}: no model names")
    return models


def _judged(text: str, flag: str) -> tuple[str, str | None]:
    body, sep, judge = text.partition("@")
    return body, (judge.strip() or None) if sep else None


def fusion_body(panel: list[str], judge: str | None) -> dict[str, Any]:
    plugin: dict[str, Any] = {"id": "fusion", "analysis_models": panel}
    if judge:
        plugin["model"] = judge
    return {"plugins": [plugin]}


def configurations_from_flags(
    *, solo: list[str], fusion: list[str], self_fusion: list[str], model: list[str]
) -> list[EvalConfiguration]:
    """Configurations from the CLI's shorthand flags.

    ``--solo M``: M alone. ``--fusion A+B@J``: a Fusion plugin with panel A, B and judge J.
    ``--self-fusion M@J``: M twice on the panel. ``--model NAME=SLUG``: any model/alias/looper slug."""
    out: list[EvalConfiguration] = []
    try:
        for m in solo:
            out.append(EvalConfiguration(name=m, model=m, solo=True))
        for text in fusion:
            body, judge = _judged(text, "--fusion")
            panel = _split_models(body, "--fusion")
            name = "fusion(" + "+".join(panel) + (f"@{judge}" if judge else "") + ")"
            out.append(EvalConfiguration(name=name, model=panel[0], extra_body=fusion_body(panel, judge)))
        for text in self_fusion:
            body, judge = _judged(text, "--self-fusion")
            m = body.strip()
            if not m:
                raise ConfigurationError(f"--self-fusion {text!r}: no model name")
            name = f"self-fusion({m}" + (f"@{judge}" if judge else "") + ")"
            out.append(EvalConfiguration(name=name, model=m, extra_body=fusion_body([m, m], judge)))
        for text in model:
            name, sep, slug = text.partition("=")
            if not sep:
                name, slug = text, text
            out.append(EvalConfiguration(name=name.strip(), model=slug.strip()))
    except ValidationError as exc:
        raise ConfigurationError(f"configuration flag: {describe(exc)}") from None
    return out
