"""``global.tenants``: how a request's tenant is known and what each tenant may do."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from router.config.base import NAME_PATTERN, Strict
from router.sessions.settings import HEADER_NAME


class ApiKeyTenant(Strict):
    """An API key → tenant entry. Only the key's sha256 digest is written down (``printf %s "$KEY" |
    sha256sum``), so the config never holds a usable key."""

    sha256: str = Field(description="64 lowercase hex digits")
    tenant: str = Field(pattern=NAME_PATTERN, max_length=128)

    @field_validator("sha256")
    @classmethod
    def _digest(cls, value: str) -> str:
        if len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value):
            raise ValueError('expected a sha256 digest: 64 hex digits (printf %s "$KEY" | sha256sum)')
        return value.lower()


class TenantPolicy(Strict):
    name: str = Field(pattern=NAME_PATTERN, max_length=128)
    # Models (models[].name) the tenant may use, panels and looper sub-calls included; omitted: all.
    models: list[str] | None = None
    # Looper algorithms (fusion, confidence, remom ...) the tenant may run; omitted: all, []: none.
    loopers: list[str] | None = None
    # Tokens per minute over a sliding window, across replicas when tokens_store is redis; omitted: no limit.
    tokens_per_minute: int | None = Field(default=None, gt=0)


class TenantSettings(Strict):
    # A header Envoy sets (e.g. from its jwt_authn filter's claim_to_headers). The generated Envoy config
    # strips a client's copy first; only trust_client_header: true (a gateway in front already set it)
    # lets a client-sent value through.
    header: str = Field(default="x-vsr-tenant", pattern=HEADER_NAME)
    trust_client_header: bool = False
    # Where the API key is read (`authorization: Bearer <key>` or a plain header such as x-api-key).
    api_key_header: str = Field(default="authorization", pattern=HEADER_NAME)
    api_keys: list[ApiKeyTenant] = Field(default_factory=list)
    default_tenant: str | None = Field(default=None, pattern=NAME_PATTERN)  # requests nobody identified
    require_tenant: bool = False  # 401 for requests with no tenant
    policies: list[TenantPolicy] = Field(default_factory=list)
    tokens_store: Literal["memory", "redis"] = "memory"

    @model_validator(mode="after")
    def _consistent(self) -> TenantSettings:
        names = [p.name for p in self.policies]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"policies: duplicate tenant names {dup}")
        digests = [k.sha256 for k in self.api_keys]
        if len(set(digests)) != len(digests):
            raise ValueError("api_keys: the same sha256 digest appears twice")
        if self.policies:
            known = set(names)
            for i, k in enumerate(self.api_keys):
                if k.tenant not in known:
                    raise ValueError(f"api_keys[{i}].tenant: {k.tenant!r} has no entry in policies (known: {sorted(known)})")
            if self.default_tenant is not None and self.default_tenant not in known:
                raise ValueError(f"default_tenant: {self.default_tenant!r} has no entry in policies (known: {sorted(known)})")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.policies or self.api_keys or self.default_tenant or self.require_tenant)

    def policy(self, name: str | None) -> TenantPolicy | None:
        return next((p for p in self.policies if p.name == name), None) if name else None
