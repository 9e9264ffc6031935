"""The shared secret between Envoy and the router's ext_proc server.

Envoy sends it as gRPC initial metadata on every ``Process`` stream (``grpc_service.initial_metadata``:
``authorization: Bearer <secret>``); the router refuses a stream without it with UNAUTHENTICATED, so
nothing but your Envoy can drive a request through the router (a direct ``Process`` call could
otherwise run a Fusion, or route with headers the router trusts). The secret lives in an environment
variable or a file named by config or CLI, never in the config itself.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

METADATA_KEY = "authorization"
SCHEME = "Bearer "
# What can travel as an HTTP/2 header value and sit unquoted in YAML: no spaces, quotes or controls.
_ALLOWED = re.compile(r"^[A-Za-z0-9._~+/=-]{16,4096}$")


class SecretError(ValueError):
    """The named secret cannot be read or is not usable; the message names the variable or file."""


def load_secret(env_name: str | None, file_path: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The secret from ``env_name`` or ``file_path`` (one trailing newline stripped), None when neither
    is given."""
    if env_name and file_path:
        raise SecretError("name the ext_proc secret by environment variable or by file, not both")
    if env_name:
        env = os.environ if environ is None else environ
        value = env.get(env_name)
        if value is None:
            raise SecretError(f"the ext_proc secret variable {env_name} is not set")
        return _checked(value, f"environment variable {env_name}")
    if file_path:
        try:
            value = Path(file_path).read_text()
        except OSError as exc:
            raise SecretError(f"cannot read the ext_proc secret file {file_path}: {exc.strerror or exc}") from exc
        return _checked(value.removesuffix("\n").removesuffix("\r"), f"file {file_path}")
    return None


def _checked(value: str, where: str) -> str:
    if not _ALLOWED.match(value):
        raise SecretError(
            f"the ext_proc secret in {where} must be 16-4096 characters of A-Z a-z 0-9 . _ ~ + / = - "
            "(e.g. `openssl rand -hex 32`)"
        )
    return value


def metadata_value(secret: str) -> str:
    return SCHEME + secret


def authorized(metadata: Iterable[tuple[str, str | bytes]] | None, secret: str) -> bool:
    """Constant-time check of the stream's metadata against the secret."""
    expected = metadata_value(secret).encode()
    got = b""
    for key, value in metadata or ():
        if key.lower() == METADATA_KEY:
            got = value if isinstance(value, bytes) else value.encode()
            break
    return hmac.compare_digest(got, expected)
