"""The backend simulator, driven through the official openai client like the router's upstreams are."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import pytest_asyncio
from openai import AsyncOpenAI

from router.sim import RunningBackend, SimBackendSpec, parse_backend_arg, start_backends, stop_backends

REPO = Path(__file__).resolve().parents[2]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
CLOCK_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
JUDGE_PROMPT = [
    {"role": "system", "content": "You are a judge."},
    {
        "role": "user",
        "content": "Panel: [qwen3-8b@vllm-a] yes it is. [llama-3b@vllm-b] no it is not. "
        "Return JSON with consensus, contradictions and blind_spots.",
    },
]
# A synthesis call carries the analysis (and so the word) in its system message only.
SYNTHESIS_PROMPT = [
    {"role": "system", "content": 'Judge analysis: {"consensus": ["yes"]}. Write the final answer.'},
    {"role": "user", "content": "Is it?"},
]
FENCE = re.compile(r"```json\s*(.*?)\s*```", re.DOTALL)


@pytest_asyncio.fixture(scope="module")
async def sims() -> AsyncIterator[dict[str, RunningBackend]]:
    specs = [
        SimBackendSpec(name="a", models=["qwen3-8b", "qwen3-32b"], max_tokens=16),
        SimBackendSpec(name="err", mode="error", fail_status=503),
        SimBackendSpec(name="drop", mode="drop_midstream"),
        SimBackendSpec(name="judge", mode="judge_json"),
        SimBackendSpec(name="broken", mode="broken_json_judge"),
        SimBackendSpec(name="strict", models=["only-me"], strict_models=True),
        SimBackendSpec(name="slow", latency_ms=150, tps=100, max_tokens=10),
    ]
    backends = await start_backends(specs)
    yield {b.name: b for b in backends}
    await stop_backends(backends)


ClientFactory = Callable[..., AsyncOpenAI]


@pytest_asyncio.fixture
async def client() -> AsyncIterator[ClientFactory]:
    made: list[AsyncOpenAI] = []

    def make(backend: RunningBackend, **kwargs: Any) -> AsyncOpenAI:
        # No retries: tests count requests and expect failures to surface at once.
        made.append(AsyncOpenAI(base_url=f"{backend.url}/v1", api_key="x", max_retries=0, **kwargs))
        return made[-1]

    yield make
    for api in made:
        await api.close()


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_non_stream_identity_and_usage(sims: dict[str, RunningBackend], client: ClientFactory) -> None:
    raw = await client(sims["a"]).chat.completions.with_raw_response.create(
        model="qwen3-32b", messages=[{"role": "system", "content": "be brief"}, *user("Hello there, how are you?")]
    )
    assert raw.headers["x-sim-backend"] == "a"
    assert raw.headers["x-sim-received-model"] == "qwen3-32b"
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.id and completion.created
    assert completion.model == "qwen3-32b"
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert choice.message.content.startswith("[qwen3-32b@a] echo: Hello there, how are you?")
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 2 + 5
    assert completion.usage.completion_tokens == 16 == len(choice.message.content.split())
    assert completion.usage.total_tokens == 23


async def test_answers_are_deterministic_and_capped(sims: dict[str, RunningBackend], client: ClientFactory) -> None:
    api = client(sims["a"])
    first = await api.chat.completions.create(model="qwen3-8b", messages=user("same question"))
    second = await api.chat.completions.create(model="qwen3-8b", messages=user("same question"))
    assert first.choices[0].message.content == second.choices[0].message.content
    capped = await api.chat.completions.create(model="qwen3-8b", messages=user("same question"), max_completion_tokens=4)
    assert capped.choices[0].message.content == "[qwen3-8b@a] echo: same question"
    assert capped.choices[0].finish_reason == "length" and capped.usage and capped.usage.completion_tokens == 4


async def test_stream_chunks_usage_and_done(sims: dict[str, RunningBackend], client: ClientFactory) -> None:
    api = client(sims["a"])
    plain = await api.chat.completions.create(model="qwen3-8b", messages=user("stream me"))
    stream = await api.chat.completions.create(
        model="qwen3-8b", messages=user("stream me"), stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert all(c.object == "chat.completion.chunk" and c.model == "qwen3-8b" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 16 and chunks[-1].usage.prompt_tokens == 2

    # The [DONE] sentinel is hidden by the client, so read the raw SSE too.
    async with aiohttp.ClientSession() as session:
        body = {"model": "qwen3-8b", "messages": user("stream me"), "stream": True}
        async with session.post(f"{sims['a'].url}/v1/chat/completions", json=body) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            raw = await resp.text()
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert all(json.loads(e[6:])["choices"] for e in events[:-2])  # no usage chunk unless asked


async def test_tool_call_non_stream(sims: dict[str, RunningBackend], client: ClientFactory) -> None:
    completion = await client(sims["a"]).chat.completions.create(
        model="qwen3-8b", messages=user("What's the weather in New York today?"), tools=[WEATHER_TOOL, CLOCK_TOOL]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "New York", "unit": "celsius"}


async def test_tool_call_stream_deltas_reassemble(sims: dict[str, RunningBackend], client: ClientFactory) -> None:
    stream = await client(sims["a"]).chat.completions.create(
        model="qwen3-8b", messages=user("weather in Paris?"), tools=[WEATHER_TOOL], stream=True
    )
    deltas = [c.choices[0] async for c in stream if c.choices]
    first = deltas[0].delta.tool_calls[0]  # type: ignore[index]
    assert first.id and first.type == "function" and first.function and first.function.name == "get_weather"
    fragments = [d.delta.tool_calls[0] for d in deltas[1:] if d.delta.tool_calls]
    assert len(fragments) > 1 and all(f.id is None and f.function and f.function.name is None for f in fragments)
    arguments = "".join(f.function.arguments or "" for f in fragments if f.function)
    assert json.loads(arguments) == {"location": "Paris", "unit": "celsius"}
    assert deltas[-1].finish_reason == "tool_calls"


async def test_tool_choice_variants_and_tool_result(sims: dict[str, RunningBackend], client: ClientFactory) -> None:
    api = client(sims["a"])
    named = await api.chat.completions.create(
        model="qwen3-8b",
        messages=user("no trigger word here"),
        tools=[WEATHER_TOOL, CLOCK_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert named.choices[0].message.tool_calls[0].function.name == "get_time"  # type: ignore[index]
    assert json.loads(named.choices[0].message.tool_calls[0].function.arguments) == {}  # type: ignore[index]
    required = await api.chat.completions.create(
        model="qwen3-8b", messages=user("hello"), tools=[CLOCK_TOOL], tool_choice="required"
    )
    assert required.choices[0].finish_reason == "tool_calls"
    declined = await api.chat.completions.create(
        model="qwen3-8b", messages=user("weather?"), tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert declined.choices[0].message.tool_calls is None and declined.choices[0].finish_reason == "stop"
    no_trigger = await api.chat.completions.create(model="qwen3-8b", messages=user("hello"), tools=[WEATHER_TOOL])
    assert no_trigger.choices[0].message.tool_calls is None

    history = [
        *user("weather in Paris?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny 21C"},
    ]
    answer = await api.chat.completions.create(model="qwen3-8b", messages=history, tools=[WEATHER_TOOL], tool_choice="required")
    assert answer.choices[0].finish_reason == "stop"
    assert (answer.choices[0].message.content or "").startswith("[qwen3-8b@a] tool result: sunny 21C")


async def test_error_mode_status_and_body(sims: dict[str, RunningBackend], client: ClientFactory) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        await client(sims["err"]).chat.completions.create(model="m", messages=user("hi"))
    assert caught.value.status_code == 503
    assert caught.value.response.headers["x-sim-backend"] == "err"
    async with aiohttp.ClientSession() as session:
        request = {"model": "m", "messages": user("x")}
        async with session.post(f"{sims['err'].url}/v1/chat/completions", json=request) as r:
            assert r.status == 503
            body = await r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code"}
    assert body["error"]["type"] == "server_error" and body["error"]["code"] == "service_unavailable"


async def test_header_overrides_one_request(sims: dict[str, RunningBackend], client: ClientFactory) -> None:
    api = client(sims["a"])
    with pytest.raises(openai.RateLimitError) as caught:
        await api.chat.completions.create(
            model="qwen3-8b", messages=user("hi"), extra_headers={"x-sim-mode": "error", "x-sim-fail-status": "429"}
        )
    assert caught.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    started = time.monotonic()
    ok = await api.chat.completions.create(model="qwen3-8b", messages=user("hi"), extra_headers={"x-sim-latency-ms": "200"})
    assert time.monotonic() - started >= 0.2
    assert ok.choices[0].message.content
    with pytest.raises(openai.BadRequestError):
        await api.chat.completions.create(model="qwen3-8b", messages=user("hi"), extra_headers={"x-sim-mode": "nope"})


async def test_drop_midstream_raises(sims: dict[str, RunningBackend], client: ClientFactory) -> None:
    api = client(sims["drop"])
    stream = await api.chat.completions.create(model="m", messages=user("talk to me"), stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert 0 < len(received) < 16  # a few chunks arrived, the rest never did
    with pytest.raises(openai.APIConnectionError):
        await api.chat.completions.create(model="m", messages=user("talk to me"))


async def test_hang_times_out_in_client(sims: dict[str, RunningBackend], client: ClientFactory) -> None:
    with pytest.raises(openai.APITimeoutError):
        await client(sims["a"], timeout=0.3).chat.completions.create(
            model="qwen3-8b", messages=user("hi"), extra_headers={"x-sim-mode": "hang"}
        )


def _fenced_json(content: str) -> object:
    match = FENCE.search(content)
    if match is None:
        raise ValueError("no ```json fence")
    return json.loads(match.group(1))


async def test_judge_json_is_parseable(sims: dict[str, RunningBackend], client: ClientFactory) -> None:
    completion = await client(sims["judge"]).chat.completions.create(model="judge-m", messages=JUDGE_PROMPT)
    content = completion.choices[0].message.content or ""
    assert content.startswith("[judge-m@judge]")
    analysis = _fenced_json(content)
    assert isinstance(analysis, dict)
    assert set(analysis) == {"consensus", "contradictions", "partial_coverage", "unique_insights", "blind_spots"}
    assert analysis["contradictions"][0]["stances"][0] == {"model": "qwen3-8b", "stance": "brief"}
    assert analysis["contradictions"][0]["stances"][1]["model"] == "llama-3b"
    assert completion.usage and completion.usage.completion_tokens == len(content.split())

    # Without the trigger word the judge backend answers like any other.
    synthesis = await client(sims["judge"]).chat.completions.create(model="judge-m", messages=SYNTHESIS_PROMPT)
    assert "```json" not in (synthesis.choices[0].message.content or "")
    plain = await client(sims["judge"]).chat.completions.create(model="judge-m", messages=user("hello"))
    assert (plain.choices[0].message.content or "").startswith("[judge-m@judge] echo: hello")


async def test_broken_json_judge_is_not_parseable(sims: dict[str, RunningBackend], client: ClientFactory) -> None:
    stream = await client(sims["broken"]).chat.completions.create(model="judge-m", messages=JUDGE_PROMPT, stream=True)
    content = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert content.startswith("[judge-m@broken]") and "consensus" in content
    with pytest.raises(ValueError):
        _fenced_json(content)
    with pytest.raises(ValueError):
        json.loads(content[content.index("{") :])


async def test_latency_and_pacing_are_honoured(sims: dict[str, RunningBackend], client: ClientFactory) -> None:
    api = client(sims["slow"])
    started = time.monotonic()
    await api.chat.completions.create(model="m", messages=user("hi"))
    assert time.monotonic() - started >= 0.15 + 10 / 100
    started = time.monotonic()
    stream = await api.chat.completions.create(model="m", messages=user("hi"), stream=True)
    first = await stream.__anext__()
    assert time.monotonic() - started >= 0.15
    assert first.choices[0].delta.role == "assistant"
    _ = [c async for c in stream]
    assert time.monotonic() - started >= 0.15 + 10 / 100


async def test_request_log(sims: dict[str, RunningBackend], client: ClientFactory) -> None:
    backend = sims["a"]
    async with aiohttp.ClientSession() as session:
        async with session.delete(f"{backend.url}/_sim/requests") as r:
            assert r.status == 204
        await client(backend).chat.completions.create(
            model="qwen3-8b",
            messages=[{"role": "system", "content": "injected policy"}, *user("hi")],
            extra_headers={"x-test-marker": "42"},
        )
        async with session.get(f"{backend.url}/_sim/requests") as r:
            log = await r.json()
    assert log == backend.requests
    [entry] = log
    assert entry["method"] == "POST" and entry["path"] == "/v1/chat/completions"
    assert entry["headers"]["x-test-marker"] == "42"
    assert entry["body"]["model"] == "qwen3-8b"
    assert entry["body"]["messages"][0] == {"role": "system", "content": "injected policy"}
    backend.clear_requests()
    assert backend.requests == []


async def test_models_health_and_bad_requests(sims: dict[str, RunningBackend], client: ClientFactory) -> None:
    models = await client(sims["a"]).models.list()
    assert [m.id for m in models.data] == ["qwen3-8b", "qwen3-32b"]
    # Unknown models are served anyway unless the backend is strict.
    other = await client(sims["a"]).chat.completions.create(model="somebody-else", messages=user("hi"))
    assert (other.choices[0].message.content or "").startswith("[somebody-else@a]")
    with pytest.raises(openai.NotFoundError) as caught:
        await client(sims["strict"]).chat.completions.create(model="qwen3-8b", messages=user("hi"))
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{sims['a'].url}/health") as r:
            assert r.status == 200
        async with session.post(f"{sims['a'].url}/v1/chat/completions", data=b"{not json") as r:
            assert r.status == 400
            body = await r.json()
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["code"] == "invalid_json"


async def test_fail_rate_is_seeded() -> None:
    async def statuses() -> list[int]:
        [backend] = await start_backends([SimBackendSpec(name="flaky", fail_rate=0.5, fail_status=500, seed=7)])
        try:
            async with aiohttp.ClientSession() as session:
                out = []
                for _ in range(12):
                    async with session.post(
                        f"{backend.url}/v1/chat/completions", json={"model": "m", "messages": user("hi")}
                    ) as r:
                        out.append(r.status)
                return out
        finally:
            await backend.stop()

    first = await statuses()
    assert first == await statuses()
    assert set(first) == {200, 500}


def test_backend_arg_parsing() -> None:
    spec = parse_backend_arg("name=vllm-a,port=8001,models=qwen3-8b;qwen3-32b,latency_ms=20,tps=200,strict_models=true")
    assert spec.models == ["qwen3-8b", "qwen3-32b"]
    assert (spec.port, spec.latency_ms, spec.tokens_per_second, spec.strict_models) == (8001, 20, 200, True)
    with pytest.raises(ValueError):
        parse_backend_arg("name=x,mode=sideways")
    with pytest.raises(ValueError):
        parse_backend_arg("name=x,bogus")


async def test_cli_subprocess_ready_file(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    config = tmp_path / "sims.yaml"
    config.write_text("- name: from-yaml\n  port: 0\n  models: [m-yaml]\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.sim",
        "--config", str(config),
        "--backend", "name=cli-a,port=0,models=m1;m2",
        "--backend", "name=cli-b,port=0,mode=error,fail_status=503",
        "--ready-file", str(ready),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        for _ in range(200):
            if ready.exists() or proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert ready.exists(), (await proc.stderr.read()).decode() if proc.stderr else ""
        info = json.loads(ready.read_text())
        assert set(info["backends"]) == {"from-yaml", "cli-a", "cli-b"}
        lines = [(await proc.stdout.readline()).decode().strip() for _ in range(3)]  # type: ignore[union-attr]
        for name, entry in info["backends"].items():
            assert entry["port"] > 0 and entry["url"] == f"http://127.0.0.1:{entry['port']}"
            assert f"sim backend {name} listening on {entry['url']}" in lines
        async with AsyncOpenAI(base_url=info["backends"]["cli-a"]["url"] + "/v1", api_key="x", max_retries=0) as api:
            assert [m.id for m in (await api.models.list()).data] == ["m1", "m2"]
            completion = await api.chat.completions.create(model="m2", messages=user("hi"))
        assert (completion.choices[0].message.content or "").startswith("[m2@cli-a]")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
