"""OpenAI-shaped errors: ``{"error": {"message", "type", "code", "param"}}`` with the right HTTP status."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str
    param: str | None = None


class ErrorBody(BaseModel):
    """The body of every error the router writes; a looper's trace or the blocking decision may ride
    along as extra top-level keys."""

    model_config = ConfigDict(extra="allow")
    error: ErrorDetail


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
        extra: dict[str, Any] | None = None,
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

    def model(self) -> ErrorBody:
        detail = ErrorDetail(message=self.message, type=self.type, code=self.code, param=self.param)
        return ErrorBody(error=detail, **(self.extra or {}))

    def payload(self) -> dict[str, Any]:
        return self.model().model_dump()

    def body(self) -> bytes:
        return self.model().model_dump_json().encode()


def bad_request(message: str, code: str = "invalid_request", param: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, code, param=param)
