"""``plugins[{id: <algorithm>, ...}]`` on a request: validated against the algorithm's plugin model and
the request's pinned policy, reduced to the knobs it set (and its own candidate models, if any)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from router.decisions.policy import Policy
from router.looper.merge import settings_of
from router.looper.registry import spec_for_plugin
from router.openai.errors import OpenAIError
from router.openai.parse import field_path
from router.state import LooperOverride


def parse_plugins(plugins: list[Any] | None, policy: Policy) -> LooperOverride | None:
    """The first looper plugin on the request (other plugin ids are left to their owners)."""
    for i, item in enumerate(plugins or []):
        if not isinstance(item, dict):
            continue
        spec = spec_for_plugin(str(item.get("id")))
        if spec is None:
            continue
        try:
            plugin = spec.plugin.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = f"plugins[{i}]." + field_path(err["loc"])
            raise OpenAIError(
                400, f"Invalid {spec.name} plugin field `{where}`: {err['msg']}.", "invalid_plugin", param=where
            ) from None
        if not getattr(plugin, "enabled", True):
            return None
        for where, name in spec.plugin_models(plugin):
            at = f"plugins[{i}].{where}"
            if name in policy.reserved_names:
                raise OpenAIError(
                    400,
                    f"`{at}`: {name!r} is a routing alias or looper slug and can never be a model of a looper.",
                    "invalid_plugin",
                    param=at,
                )
            if policy.resolve_model(name) is None:
                raise OpenAIError(400, f"`{at}`: unknown model {name!r}.", "invalid_plugin", param=at)
        return LooperOverride(spec.name, settings_of(plugin, spec.settings), spec.plugin_candidates(plugin))
    return None
