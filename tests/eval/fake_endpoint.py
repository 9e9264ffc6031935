"""A scripted OpenAI-compatible endpoint for eval tests: each model name is a behaviour.

* ``oracle``: answers from ``answers`` (prompt -> reply), else "I don't know".
* ``wrong``: always "I don't know".
* ``fail``: HTTP 500 with an OpenAI-shaped error.
* ``looper``: like oracle, plus a Fusion-shaped ``fusion`` trace (4 calls, per-stage usage).
* ``judge``: a verdict saying true for criteria whose id starts with ``p`` and false otherwise.
* ``garbage-judge``: prose without JSON.
* ``slow``: like oracle after ``slow_seconds``.
Every request body is kept in ``requests`` so tests can assert what was (not) asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any

from aiohttp import web

from router.local import free_port


class FakeOpenAI:
    def __init__(self, answers: dict[str, str] | None = None, *, slow_seconds: float = 0.0):
        self.answers = answers or {}
        self.slow_seconds = slow_seconds
        self.requests: list[dict[str, Any]] = []
        self.port = free_port()
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()  # set by stop(): slow requests end so shutdown does not wait

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def asked(self, model: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get("model") == model]

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        model = body.get("model", "")
        prompt = body["messages"][-1]["content"]
        if model == "fail":
            return web.json_response(
                {"error": {"message": "backend exploded", "type": "server_error", "code": "boom", "param": None}}, status=500
            )
        if model == "slow":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.slow_seconds)
        if model == "judge":
            ids = re.findall(r"^- ([A-Za-z0-9_-]+): ", prompt, re.MULTILINE)
            content = "{" + ", ".join(f'"{i}": {"true" if i.startswith("p") else "false"}' for i in ids) + "}"
        elif model == "garbage-judge":
            content = "The answer looks pretty good to me overall."
        elif model == "wrong":
            content = "I don't know."
        else:
            content = self.answers.get(prompt, "I don't know.")
        completion: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
        if model == "looper":
            completion["usage"] = {"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140}
            completion["fusion"] = {
                "iterations": 4,
                "usage": {
                    "panel": {"prompt_tokens": 20, "completion_tokens": 20, "total_tokens": 40},
                    "analysis": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
                    "synthesis": {"prompt_tokens": 30, "completion_tokens": 10, "total_tokens": 40},
                },
            }
        headers = {"x-vsr-selected-model": model}
        return web.json_response(completion, headers=headers)
