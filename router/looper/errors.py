"""Failures a looper reports: one upstream call that failed, or a stage that cannot go on."""

from __future__ import annotations


class UpstreamError(Exception):
    """A failed model call with a typed reason (``timeout``, ``http_502``, ``rate_limited``,
    ``invalid_response``, ``response_too_large``, ``stream_broken`` ...)."""

    def __init__(self, reason: str, message: str, status: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.message = message


class StageFailure(Exception):
    """A stage of a looper run failed in a way the algorithm cannot work around: the client gets
    ``status`` with ``reason`` as the error code, and the trace of what happened so far."""

    def __init__(self, stage: str, status: int, reason: str, message: str):
        super().__init__(message)
        self.stage, self.status, self.reason, self.message = stage, status, reason, message

    @classmethod
    def from_upstream(cls, stage: str, reason: str, exc: UpstreamError, what: str) -> StageFailure:
        return cls(stage, 504 if exc.reason == "timeout" else 502, reason, f"{what} failed ({exc.reason}): {exc}")
