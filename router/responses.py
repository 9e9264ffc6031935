"""Turning an error into the client's answer, in one place for every stage that can fail."""

from __future__ import annotations

from router.actions import Respond
from router.openai.errors import OpenAIError
from router.state import RequestState, ResponsePath


def error_response(state: RequestState, err: OpenAIError) -> Respond:
    state.response_path = ResponsePath.ERROR
    state.error_code = err.code
    return Respond(err.status, err.body(), {**state.response_headers(), **err.headers})
