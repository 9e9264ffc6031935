"""Who a request is for: the trusted tenant header, else the API key's digest in ``api_keys``, else
``default_tenant``. Keys are hashed on arrival and never logged; a tenant name is not a secret."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from router.openai.errors import OpenAIError
from router.tenants.settings import TenantSettings

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def _api_key(settings: TenantSettings, headers: Mapping[str, str]) -> str | None:
    value = headers.get(settings.api_key_header)
    if not value:
        return None
    if settings.api_key_header == "authorization":
        scheme, _, token = value.partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None
    return value.strip() or None


def identify(settings: TenantSettings, headers: Mapping[str, str]) -> str | None:
    """The tenant's name, None when nobody is identified (and none is required). Raises 400 for a
    malformed tenant header, 401 when a tenant is required and none is known, 403 for a tenant the
    config does not define."""
    tenant: str | None = None
    claimed = headers.get(settings.header)
    if claimed is not None:
        if not _NAME.match(claimed):
            raise OpenAIError(
                400,
                f"The `{settings.header}` header must be a tenant name (letters, digits, `_.-`, at most 128).",
                "invalid_tenant",
                param=settings.header,
            )
        tenant = claimed
    if tenant is None and settings.api_keys:
        key = _api_key(settings, headers)
        if key is not None:
            digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
            tenant = next((k.tenant for k in settings.api_keys if k.sha256 == digest), None)
    if tenant is None:
        tenant = settings.default_tenant
    if tenant is None:
        if settings.require_tenant:
            raise OpenAIError(401, "This gateway serves known tenants only: send an API key it knows.", "tenant_required")
        return None
    if settings.policies and settings.policy(tenant) is None:
        raise OpenAIError(403, f"The tenant `{tenant}` is not configured on this gateway.", "unknown_tenant")
    return tenant
