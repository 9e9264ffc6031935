"""Fusion settings: defaults → decision → request plugin, merged field by field in this one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError

from router.config.schema import FusionSettings, FusionTrace, ModelRef, RouterSettings
from router.decisions.policy import Policy
from router.looper.templates import ANALYSIS_TEMPLATE, PROMPT_VERSION, SYNTHESIS_TEMPLATE
from router.openai.errors import OpenAIError
from router.openai.parse import field_path

PLUGIN_IDS = ("fusion", "openrouter:fusion")

DEFAULTS = FusionSettings(
    include_analysis=True,
    include_intermediate_responses=True,
    on_error="skip",
    analysis_template=ANALYSIS_TEMPLATE,
    synthesis_template=SYNTHESIS_TEMPLATE,
    judge_prompt_version=PROMPT_VERSION,
    min_successful_responses=1,
)


class FusionPlugin(FusionSettings):
    """``plugins[{id: "fusion", ...}]`` on a request: every decision knob, under OpenRouter's names,
    plus OpenRouter's own plugin fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: Literal["fusion", "openrouter:fusion"]
    enabled: bool = True
    preset: str | None = None
    analysis_models: list[str] | None = Field(default=None, min_length=1, max_length=8)  # OpenRouter's bound
    # Accepted for OpenRouter compatibility; this gateway has no server-side web tools to bound.
    max_tool_calls: int | None = Field(default=None, ge=0)
    reasoning: dict[str, Any] | None = None

    def as_settings(self) -> FusionSettings:
        keep = set(FusionSettings.model_fields) & set(self.model_fields_set)
        return FusionSettings(**{k: getattr(self, k) for k in keep})


def parse_plugin(plugins: list[dict[str, Any]] | None, policy: Policy) -> FusionSettings | None:
    for i, item in enumerate(plugins or []):
        if not isinstance(item, dict) or item.get("id") not in PLUGIN_IDS:
            continue
        try:
            plugin = FusionPlugin.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = f"plugins[{i}]." + field_path(err["loc"])
            raise OpenAIError(400, f"Invalid Fusion plugin field `{where}`: {err['msg']}.", "invalid_plugin", param=where) from None
        if not plugin.enabled:
            return None
        names = [("model", plugin.model)] if plugin.model else []
        names += [(f"analysis_models[{j}]", m) for j, m in enumerate(plugin.analysis_models or [])]
        for where, name in names:
            if name in policy.fusion_slugs or name in policy.auto_names:
                raise OpenAIError(400, f"`plugins[{i}].{where}`: {name!r} is a routing alias or Fusion slug and can never be a judge or panel model.",
                                  "invalid_plugin", param=f"plugins[{i}].{where}")
            if policy.resolve_model(name) is None:
                raise OpenAIError(400, f"`plugins[{i}].{where}`: unknown model {name!r}.", "invalid_plugin", param=f"plugins[{i}].{where}")
        return plugin.as_settings()
    return None


def merge(*layers: FusionSettings | None) -> FusionSettings:
    values: dict[str, Any] = {}
    for layer in layers:
        if layer is None:
            continue
        for name in FusionSettings.model_fields:
            value = getattr(layer, name)
            if value is not None:
                values[name] = value
    return FusionSettings(**values)


@dataclass(frozen=True, slots=True)
class FusionParams:
    judge: str
    panel: tuple[str, ...]
    max_concurrent: int
    max_completion_tokens: int | None
    temperature: float | None
    include_analysis: bool
    include_intermediate_responses: bool
    on_error: str
    analysis_template: str
    synthesis_template: str
    prompt_version: str
    min_successful: int
    panel_timeout: float
    judge_timeout: float
    synthesis_timeout: float
    trace_body: bool
    trace_headers: bool


def resolve(
    merged: FusionSettings,
    model_refs: list[ModelRef],
    policy: Policy,
    router: RouterSettings,
    default_timeout: float,
    fallback_judge: str | None = None,
) -> FusionParams:
    panel = [policy.resolve_model(m).name for m in (merged.analysis_models or [r.model for r in model_refs])]  # type: ignore[union-attr]
    if not panel:
        raise OpenAIError(400, "Fusion needs a panel: set analysis_models.", "fusion_no_panel")
    judge = merged.model or fallback_judge or panel[0]
    judge_spec = policy.resolve_model(judge)
    if judge_spec is None:
        raise OpenAIError(400, f"Unknown Fusion judge model {judge!r}.", "invalid_plugin")
    trace = merged.trace or FusionTrace()
    return FusionParams(
        judge=judge_spec.name,
        panel=tuple(panel),
        max_concurrent=merged.max_concurrent or len(panel),
        max_completion_tokens=merged.max_completion_tokens,
        temperature=merged.temperature,
        include_analysis=bool(merged.include_analysis),
        include_intermediate_responses=bool(merged.include_intermediate_responses),
        on_error=merged.on_error or "skip",
        analysis_template=merged.analysis_template or ANALYSIS_TEMPLATE,
        synthesis_template=merged.synthesis_template or SYNTHESIS_TEMPLATE,
        prompt_version=merged.judge_prompt_version or PROMPT_VERSION,
        min_successful=min(merged.min_successful_responses or 1, len(panel)),
        panel_timeout=merged.panel_timeout_seconds or default_timeout,
        judge_timeout=merged.judge_timeout_seconds or default_timeout,
        synthesis_timeout=merged.synthesis_timeout_seconds or default_timeout,
        trace_body=router.trace_in_body if trace.body is None else trace.body,
        trace_headers=router.trace_in_headers if trace.headers is None else trace.headers,
    )
