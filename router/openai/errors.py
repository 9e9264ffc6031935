"""OpenAI-shaped errors: ``{"error": {"message", "type", "code", "param"}}`` with the right HTTP status."""

from __future__ import annotations

import orjson

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


class OpenAIError(Exception):
    """An error the client sees as an OpenAI error body; raising it never takes the router down."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        *,
        param: str | None = None,
        type: str | None = None,
        extra: dict | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.extra = extra
        self.headers = headers or {}  # e.g. retry-after on 429/503

    def payload(self) -> dict:
        err: dict = {"message": self.message, "type": self.type, "code": self.code, "param": self.param}
        body: dict = {"error": err}
        if self.extra:
            body.update(self.extra)
        return body

    def body(self) -> bytes:
        return orjson.dumps(self.payload())


def bad_request(message: str, code: str = "invalid_request", param: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, code, param=param)
