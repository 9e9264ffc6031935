"""What a tenant may use: models (routing targets and every looper sub-call) and looper algorithms.
A request for something its tenant may not use is a 403 naming it; on the auto path, decisions the
tenant cannot use are passed over instead (the next eligible one wins)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from router.config.schema import Decision
from router.openai.errors import OpenAIError
from router.tenants.settings import TenantPolicy


@dataclass(frozen=True, slots=True)
class Access:
    tenant: str | None
    policy: TenantPolicy | None  # None: no restrictions

    def model_ok(self, model: str) -> bool:
        return self.policy is None or self.policy.models is None or model in self.policy.models

    def looper_ok(self, algorithm: str) -> bool:
        return self.policy is None or self.policy.loopers is None or algorithm in self.policy.loopers

    def require_model(self, model: str, what: str = "model", param: str | None = "model") -> None:
        if not self.model_ok(model):
            raise OpenAIError(
                403, f"The tenant `{self.tenant}` may not use the {what} `{model}`.", "model_not_allowed", param=param
            )

    def require_models(self, models: Iterable[str], what: str) -> None:
        for m in models:
            self.require_model(m, what, None)

    def require_looper(self, algorithm: str, param: str | None = None) -> None:
        if not self.looper_ok(algorithm):
            raise OpenAIError(
                403, f"The tenant `{self.tenant}` may not run the `{algorithm}` looper.", "looper_not_allowed", param=param
            )

    def decision_ok(self, decision: Decision) -> bool:
        """May this tenant be served by ``decision``? Guards always apply; a routing decision needs one
        allowed modelRef; a looper decision its algorithm and every model its config names."""
        if self.policy is None or decision.is_guard:
            return True
        if decision.is_looper:
            return self.looper_ok(decision.algorithm.type) and all(self.model_ok(m) for m in looper_models(decision))
        return any(self.model_ok(r.model) for r in decision.modelRefs)


NO_LIMITS = Access(None, None)


def looper_models(decision: Decision) -> list[str]:
    """Every model a looper decision's config names: its modelRefs and the settings' model fields."""
    names = [r.model for r in decision.modelRefs]
    settings = decision.algorithm_settings
    for attr in ("model", "synthesis_model"):
        value = getattr(settings, attr, None)
        if isinstance(value, str):
            names.append(value)
    names += list(getattr(settings, "analysis_models", None) or [])
    gate = getattr(settings, "gate", None)
    if gate is not None:
        names.append(gate.model)
    return names
