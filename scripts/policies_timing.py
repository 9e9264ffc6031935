"""What session affinity, tenant budgets and selection add to the router's own time per routed request,
measured in-process (pipeline.handle, no Envoy, no backend): the same request routed N times under each
policy variant, median and p99 of the per-request time.

    .venv/bin/python scripts/policies_timing.py [--requests 3000] [--redis 127.0.0.1:6379]

With --redis the Redis session store is measured too (a local redis-server; start one with
`redis-server --port 6379 --save '' --appendonly no`)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import time
from typing import Any

import orjson

import router.config  # noqa: F401 - the config package first
from router.app import App
from router.config import parse_config
from router.extproc import pipeline
from router.observability.logging import configure_logging
from router.state import RequestState

KEY = "sk-timing-tenant"


def config(decision: dict[str, Any], **global_: Any) -> dict[str, Any]:
    return {
        "global": global_,
        "backends": [{"name": "b", "endpoint": "http://127.0.0.1:9"}],
        "models": [
            {"name": n, "backend": "b", "pricing": {"prompt_per_1m": p, "completion_per_1m": 2 * p}}
            for n, p in (("small", 0.1), ("medium", 1.0), ("large", 5.0))
        ],
        "routing": {
            "decisions": [
                {"name": "chat", "modelRefs": [{"model": "small"}, {"model": "medium"}, {"model": "large"}], **decision}
            ]
        },
    }


def variants(redis: str | None) -> dict[str, dict[str, Any]]:
    tenants = {
        "api_keys": [{"sha256": hashlib.sha256(KEY.encode()).hexdigest(), "tenant": "t"}],
        "policies": [{"name": "t", "tokens_per_minute": 10**12}],
    }
    out = {
        "static (the first modelRef)": config({}),
        "weighted": config({"algorithm": {"type": "weighted"}}),
        "cost_aware": config({"algorithm": {"type": "cost_aware"}}),
        "latency_aware (no observations)": config({"algorithm": {"type": "latency_aware"}}),
        "weighted + session affinity (memory)": config({"algorithm": {"type": "weighted"}, "session_affinity": True}),
        "static + tenant from API key + tokens/min (memory)": config({}, tenants=tenants),
    }
    if redis:
        store = {"address": redis, "timeout_ms": 1000}
        out["weighted + session affinity (redis)"] = config(
            {"algorithm": {"type": "weighted"}, "session_affinity": True}, redis=store, sessions={"store": "redis"}
        )
        out["static + tenant tokens/min (redis)"] = config({}, redis=store, tenants={**tenants, "tokens_store": "redis"})
    return out


async def measure(data: dict[str, Any], n: int) -> list[float]:
    app = App.from_config(parse_config(data))
    await app.start()
    body = orjson.dumps(
        {
            "model": "auto",
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_completion_tokens": 64,
        }
    )
    headers = {"x-session-id": "conv-1", "authorization": f"Bearer {KEY}"}
    times = []
    for i in range(n + 200):
        state = RequestState(policy=app.policy, body=bytearray(body), headers=dict(headers), request_id=str(i))
        t0 = time.perf_counter()
        await pipeline.handle(app, state)
        if i >= 200:  # warm-up: caches, first connection
            times.append((time.perf_counter() - t0) * 1e6)
    await app.close()
    return times


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--redis", help="host:port of a redis-server to measure the Redis stores too")
    args = ap.parse_args()
    configure_logging("json", "warning")
    print(f"| policy | median µs | p99 µs |  ({args.requests} routed requests each, in-process)")
    print("| --- | --- | --- |")
    for name, data in variants(args.redis).items():
        times = sorted(await measure(data, args.requests))
        p99 = times[int(len(times) * 0.99) - 1]
        print(f"| {name} | {statistics.median(times):.0f} | {p99:.0f} |")


if __name__ == "__main__":
    asyncio.run(main())
