"""One chat completion through the official ``openai`` async client, timed and costed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, cast

import openai

from router.eval.cost import Cost, cost_of

# Router response headers worth keeping per answer: which decision/model/path served it.
_KEEP_HEADERS = ("x-vsr-selected-decision", "x-vsr-selected-model", "x-vsr-response-path")


class CallFailed(Exception):
    """The endpoint did not produce a usable answer; ``reason`` is recorded for the item."""

    def __init__(self, reason: str, latency_ms: float):
        super().__init__(reason)
        self.reason = reason
        self.latency_ms = latency_ms


@dataclass
class Reply:
    content: str
    finish_reason: str | None
    cost: Cost
    latency_ms: float
    headers: dict[str, str] = field(default_factory=dict)


def make_client(base_url: str, api_key: str, timeout: float) -> openai.AsyncOpenAI:
    # No client retries: a failure is recorded for the item and retried by the next (resumed) run.
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def chat(
    client: openai.AsyncOpenAI,
    *,
    model: str,
    messages: list[dict[str, str]],
    max_tokens: int,
    temperature: float,
    extra_body: dict[str, Any] | None = None,
) -> Reply:
    start = time.perf_counter()

    def elapsed() -> float:
        return (time.perf_counter() - start) * 1000

    try:
        raw = await client.chat.completions.with_raw_response.create(
            model=model,
            messages=cast(Any, messages),  # plain dicts in the API's shape
            max_tokens=max_tokens,
            temperature=cast(Any, temperature),
            extra_body=extra_body or None,
        )
        body = raw.http_response.json()
    except openai.APIStatusError as exc:
        raise CallFailed(f"HTTP {exc.status_code}: {_short(_error_message(exc))}", elapsed()) from None
    except openai.APITimeoutError:
        raise CallFailed("timeout", elapsed()) from None
    except openai.APIConnectionError as exc:
        raise CallFailed(f"connection failed: {_short(str(exc.__cause__ or exc))}", elapsed()) from None
    except ValueError as exc:  # a 200 whose body is not JSON
        raise CallFailed(f"response is not JSON: {_short(str(exc))}", elapsed()) from None
    latency = elapsed()
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise CallFailed("response has no choices", latency)
    message = choices[0].get("message") or {}
    content = message.get("content") if isinstance(message, dict) else None
    headers = {k: v for k in _KEEP_HEADERS if (v := raw.headers.get(k))}
    return Reply(
        content=content if isinstance(content, str) else "",
        finish_reason=choices[0].get("finish_reason"),
        cost=cost_of(body),
        latency_ms=latency,
        headers=headers,
    )


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else None
        if isinstance(message, str):
            return message
    return str(exc.message)
