"""Soak under concurrency: benign and hostile clients together through the real Envoy + router (`make soak`).

Closed-loop aiohttp clients for a fixed time against the default config with simulated backends:
``--benign`` clients send ordinary prompts, ``--hostile`` clients send prompts carrying a Luhn-valid
card number or a jailbreak phrase (alternately). The issue's load was 200 + 200 on 2 cores:

    .venv/bin/python bench/soak.py                               # 32 + 32 clients, 60 s
    .venv/bin/python bench/soak.py --benign 200 --hostile 200 --duration 120 --json /tmp/soak.json

Reported: served / shed (429 and 503, by error code) / errors per client kind, benign requests answered
403 or 422 (must be 0), hostile requests served 200 (must be 0), card numbers and jailbreak phrases that
reached a backend (from the simulated backends' request logs; must be 0), p50/p99 latency, router RSS
and open fds before and after (after the router is idle again), Envoy fds. A summary table is printed
and the whole result is written as JSON. Exit status 1 when a must-be-zero count is not zero, the router
died, or an error reply was not OpenAI-shaped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp

from tests.fuzz import hostile as T
from tests.fuzz import wire
from tests.fuzz.invariants import error_shape_problem
from tests.fuzz.runner import Target, default_sims, load_default_config, loadavg, open_fds, rss_mb, settle

SHED = (429, 503)


@dataclass
class Tally:
    sent: int = 0
    served: int = 0  # 200
    blocked: int = 0  # 403 / 422
    shed: Counter[str] = field(default_factory=Counter)  # "429 code" -> n
    errors: Counter[str] = field(default_factory=Counter)  # "500 code" / "timeout" / "ClientError" -> n
    bad_shape: Counter[str] = field(default_factory=Counter)  # non-2xx replies that were not OpenAI-shaped, by status
    latencies_ms: list[float] = field(default_factory=list)
    blocked_codes: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {
            "sent": self.sent,
            "served_200": self.served,
            "blocked_403_422": self.blocked,
            "blocked_codes": dict(self.blocked_codes),
            "shed": dict(self.shed),
            "shed_total": sum(self.shed.values()),
            "errors": dict(self.errors),
            "errors_total": sum(self.errors.values()),
            "not_openai_shaped": dict(self.bad_shape),
            "latency_ms": {
                "p50": round(_pct(lat, 50), 1),
                "p99": round(_pct(lat, 99), 1),
                "max": round(lat[-1], 1) if lat else None,
            },
        }


def _pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


# Every request carries a ticket header, which Envoy passes on to the backend, so a routed backend call
# can be traced to the client request that caused it. Looper sub-calls (Fusion) do not carry client
# headers: they are counted as calls. The prompt itself stays untouched (a number in it could change
# what the PII classifier sees).
TICKET_HEADER = "x-soak-ticket"


def benign_body(rng: random.Random) -> dict[str, Any]:
    text = rng.choice(T.BENIGN)
    if rng.random() < 0.3:
        text = f"{T.filler(rng, rng.randint(20, 200))} {text}"
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


def hostile_body(rng: random.Random, n: int) -> tuple[dict[str, Any], str, str]:
    """(body, kind, marker): cards and jailbreaks alternate."""
    if n % 2 == 0:
        text, marker = T.card_sentence(rng)
        kind = "card"
    else:
        text = marker = T.jailbreak(rng)
        kind = "jailbreak"
    if rng.random() < 0.3:
        text = f"{rng.choice(T.BENIGN)} {text}"
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}, kind, marker


async def client(
    session: aiohttp.ClientSession, url: str, kind: str, seed: int, end: float, tallies: dict[str, Tally], timeout: float
) -> None:
    rng = random.Random(seed)
    n = 0
    while time.monotonic() < end:
        ticket = f"c{seed}r{n}"
        if kind == "benign":
            body, tally = benign_body(rng), tallies["benign"]
        else:
            body, sub, _ = hostile_body(rng, n + seed)
            tally = tallies[sub]
        n += 1
        tally.sent += 1
        t0 = time.perf_counter()
        try:
            async with session.post(
                url, json=body, headers={TICKET_HEADER: ticket}, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                data = await resp.read()
                status = resp.status
                headers = [(k.lower(), v) for k, v in resp.headers.items()]
        except TimeoutError:
            tally.errors["client_timeout"] += 1
            continue
        except aiohttp.ClientError as exc:
            tally.errors[type(exc).__name__] += 1
            continue
        tally.latencies_ms.append((time.perf_counter() - t0) * 1000)
        code = _code(data)
        if status == 200:
            tally.served += 1
        elif status in (403, 422):
            tally.blocked += 1
            tally.blocked_codes[f"{status} {code}"] += 1
        elif status in SHED:
            tally.shed[f"{status} {code}"] += 1
        else:
            tally.errors[f"{status} {code}"] += 1
        if status >= 300 and error_shape_problem(wire.Reply(status, headers, data)):
            tally.bad_shape[str(status)] += 1


def _code(data: bytes) -> str:
    try:
        err = json.loads(data).get("error")
        return str(err.get("code")) if isinstance(err, dict) else "-"
    except (ValueError, AttributeError):
        return "(not json)"


async def load(port: int, benign: int, hostile: int, duration: float, timeout: float, seed: int) -> dict[str, Tally]:
    tallies = {"benign": Tally(), "card": Tally(), "jailbreak": Tally()}
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    connector = aiohttp.TCPConnector(limit=benign + hostile, limit_per_host=benign + hostile)
    async with aiohttp.ClientSession(connector=connector) as session:
        end = time.monotonic() + duration
        tasks = [client(session, url, "benign", seed * 100_000 + i, end, tallies, timeout) for i in range(benign)]
        tasks += [client(session, url, "hostile", seed * 100_000 + 50_000 + i, end, tallies, timeout) for i in range(hostile)]
        await asyncio.gather(*tasks)
    return tallies


def _run(coro: Any) -> Any:
    try:  # uvloop keeps the load generator's own CPU share down on a 2-core machine
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def forwarded(target: Target) -> dict[str, Any]:
    """Card numbers and jailbreak phrases in what the simulated backends received during the soak."""
    records = target.received()
    cards: dict[str, set[str]] = {}  # card -> tickets of the client requests that carried it upstream
    jailbreaks: dict[str, set[str]] = {}
    calls: Counter[str] = Counter()
    for rec in records:
        body = rec.get("body")
        ticket = (rec.get("headers") or {}).get(TICKET_HEADER)
        tickets = {ticket} if ticket else {f"looper-call-{id(rec)}"}
        for card in T.CARDS:
            if T.found_in(card, body):
                cards.setdefault(card, set()).update(tickets)
                calls["card"] += 1
        for phrase in T.JAILBREAKS:
            if T.found_in(phrase, body):
                jailbreaks.setdefault(phrase[:40], set()).update(tickets)
                calls["jailbreak"] += 1
    return {
        "backend_calls": len(records),
        "cards_forwarded": sum(len(t) for t in cards.values()),
        "card_backend_calls": calls["card"],
        "cards": {k: len(v) for k, v in cards.items()},
        "jailbreaks_forwarded": sum(len(t) for t in jailbreaks.values()),
        "jailbreak_backend_calls": calls["jailbreak"],
        "jailbreaks": {k: len(v) for k, v in jailbreaks.items()},
    }


def proc_stats(target: Target) -> dict[str, Any]:
    assert target.stack is not None and target.watchdog is not None
    router = target.stack.procs["router"]
    envoy = target.stack.procs["envoy"]
    return {
        "router_rss_mb": round(sum(rss_mb(p) or 0 for p in target.watchdog.pids), 1),
        "router_fds": sum(open_fds(p) or 0 for p in target.watchdog.pids),
        "envoy_fds": open_fds(envoy.pid),
        "router_alive": router.poll() is None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benign", type=int, default=32, help="benign concurrent clients (default 32)")
    p.add_argument("--hostile", type=int, default=32, help="hostile concurrent clients: card numbers and jailbreaks (default 32)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request client timeout in seconds (default 60)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--body-mode", choices=("FULL_DUPLEX_STREAMED", "BUFFERED"), default="FULL_DUPLEX_STREAMED")
    p.add_argument(
        "--rss-kill-mb", type=float, default=4096.0, help="SIGKILL the router above this RSS (protects a shared machine)"
    )
    p.add_argument("--json", type=Path, help="write the result here (also printed as one JSON: line)")
    args = p.parse_args(argv)

    workroot = Path(tempfile.mkdtemp(prefix="fusion-soak-"))
    print(f"soak: {args.benign} benign + {args.hostile} hostile clients for {args.duration:g} s; workdir {workroot}", flush=True)
    # Every backend request of the run stays in the sims' logs, to be searched for cards at the end.
    sims = default_sims(log_size=1_000_000)
    target = Target(workroot, load_default_config(), sims, args.body_mode, args.rss_kill_mb)
    result: dict[str, Any] = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "loadavg_before": loadavg(),
    }
    try:
        target.start()
        assert target.watchdog is not None
        result["before"] = proc_stats(target)
        target.watchdog.reset_peak()
        started = time.monotonic()
        tallies = _run(load(target.port, args.benign, args.hostile, args.duration, args.timeout, args.seed))
        result["wall_s"] = round(time.monotonic() - started, 1)
        result["loadavg_after"] = loadavg()
        result["router_rss_peak_mb"] = round(target.watchdog.peak_mb, 1)
        result["killed_by_rss_guard_at_mb"] = target.watchdog.killed_at_mb
        result["busy_after_s"] = round(settle(target.watchdog.pids, cap_s=120.0), 1)
        result["after"] = proc_stats(target)
        died = target.died()
        result["stack_broken"] = died
        after = target.normal() if died is None else None
        result["normal_request_after"] = after.status if after is not None else None
        result["forwarded"] = forwarded(target) if died is None or not died.startswith("sim") else None
        result["clients"] = {k: t.as_dict() for k, t in tallies.items()}
    finally:
        target.stop()

    verdict = judge(result)
    result["verdict"] = verdict
    print_summary(result)
    line = json.dumps(result)
    print("JSON: " + line)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"result: {args.json}")
    return 0 if all(v["ok"] for v in verdict) else 1


def judge(r: dict[str, Any]) -> list[dict[str, Any]]:
    c = r["clients"]
    fwd = r.get("forwarded") or {}
    benign_blocked = c["benign"]["blocked_403_422"]
    hostile_served = c["card"]["served_200"] + c["jailbreak"]["served_200"]
    bad_shape = sum(sum(t["not_openai_shaped"].values()) for t in c.values())
    return [
        {"check": "benign requests answered 403/422", "value": benign_blocked, "ok": benign_blocked == 0},
        {"check": "hostile requests answered 200", "value": hostile_served, "ok": hostile_served == 0},
        {
            "check": "requests whose card number reached a backend",
            "value": fwd.get("cards_forwarded"),
            "ok": fwd.get("cards_forwarded") == 0,
        },
        {
            "check": "requests whose jailbreak reached a backend",
            "value": fwd.get("jailbreaks_forwarded"),
            "ok": fwd.get("jailbreaks_forwarded") == 0,
        },
        {"check": "error replies not OpenAI-shaped", "value": bad_shape, "ok": bad_shape == 0},
        {
            "check": "router alive and serving afterwards",
            "value": r.get("normal_request_after"),
            "ok": r.get("stack_broken") is None and r.get("normal_request_after") == 200,
        },
    ]


def print_summary(r: dict[str, Any]) -> None:
    print()
    headers = ["clients", "sent", "200", "403/422", "shed 429/503", "errors", "not OpenAI-shaped", "p50 ms", "p99 ms"]
    rows = []
    for name, t in r["clients"].items():
        shaped = sum(t["not_openai_shaped"].values())
        rows.append(
            [
                name,
                str(t["sent"]),
                str(t["served_200"]),
                str(t["blocked_403_422"]),
                str(t["shed_total"]),
                str(t["errors_total"]),
                str(shaped),
                f"{t['latency_ms']['p50']:.0f}",
                f"{t['latency_ms']['p99']:.0f}",
            ]
        )
    print(_table(headers, rows))
    for name, t in r["clients"].items():
        for what in ("blocked_codes", "shed", "errors"):
            if t[what]:
                print(f"  {name} {what}: " + ", ".join(f"{k}: {v}" for k, v in sorted(t[what].items())))
    b, a = r["before"], r["after"]
    print()
    print(
        _table(
            ["router", "before", "after"],
            [
                ["RSS MB", str(b["router_rss_mb"]), str(a["router_rss_mb"])],
                ["open fds", str(b["router_fds"]), str(a["router_fds"])],
                ["Envoy open fds", str(b["envoy_fds"]), str(a["envoy_fds"])],
            ],
        )
    )
    print(f"machine load average (1/5/15 min) before: {r['loadavg_before']}, at the end of the load: {r.get('loadavg_after')}")
    print(
        f"router RSS peak during the soak: {r['router_rss_peak_mb']} MB"
        + (f" (SIGKILLed by the RSS guard at {r['killed_by_rss_guard_at_mb']:.0f} MB)" if r["killed_by_rss_guard_at_mb"] else "")
        + f"; busy {r['busy_after_s']} s after the load stopped"
    )
    fwd = r.get("forwarded") or {}
    print(
        f"backend calls: {fwd.get('backend_calls')}; client requests whose card reached a backend: {fwd.get('cards_forwarded')} "
        f"({fwd.get('card_backend_calls')} calls); whose jailbreak did: {fwd.get('jailbreaks_forwarded')} "
        f"({fwd.get('jailbreak_backend_calls')} calls); each Fusion sub-call counts as one request (no ticket)"
    )
    print()
    print(
        _table(
            ["check (must be 0 / ok)", "value", "ok"],
            [[v["check"], str(v["value"]), "yes" if v["ok"] else "NO"] for v in r["verdict"]],
        )
    )


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(row) for row in rows)])


if __name__ == "__main__":
    sys.exit(main())
