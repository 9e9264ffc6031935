"""Tenant signal: the request belongs to one of the named tenants (identified before signals run)."""

from __future__ import annotations

from router.config.signals import TenantSignal as TenantSpec
from router.signals.base import Signal, SignalContext, SignalResult


class TenantSignal(Signal):
    type = "tenant"

    def __init__(self, spec: TenantSpec):
        super().__init__(spec)
        self.spec: TenantSpec = spec
        self._tenants = frozenset(spec.tenants)

    def evaluate_now(self, ctx: SignalContext) -> SignalResult:
        return SignalResult(self.type, self.name, ctx.tenant is not None and ctx.tenant in self._tenants)

    def describe(self) -> str:
        return f"tenant in {sorted(self._tenants)}"
