#!/usr/bin/env python3
"""The ML signal path at production concurrency (`make bench-classifiers`).

Envoy + the real router on the embedded default config (every model-backed signal on: jailbreak, two
PII signals, domain, complexity), simulated backends at zero latency, and measurements whose unit is
**one single-threaded MiniLM-L6 encoder pass** of the same prompts, measured in this process in the same
run, before and after the load (so a loaded machine scales both sides alike):

* ``load``: closed-loop load at 1 and 32 clients (``wrk`` with a Lua body generator when installed,
  else aiohttp); every request carries a prompt no earlier request had (a tag of words in the text:
  digits would look like account numbers to the PII guard), so the result cache never answers and
  the models really run. Reports req/s, p50/p99, the decisions answered and the router's CPU-ms per
  routed request (every thread of the router process, from /proc), also in encoder passes.
* ``conversation``: 10-turn conversations (system prompt, user and assistant turns; every user turn
  and assistant reply new text), sent turn by turn, one request at a time; the router's CPU per turn
  (scheduler nanoseconds of its threads), with the result cache, with one system prompt shared by
  all conversations, and on a second router without the cache (``global.classifiers.result_cache_mb: 0``).
* ``models`` (opt-in, ``--phases models``): per-model latency of one short prompt.

``--variant NAME[:key=value,...][@SOURCE_TREE]`` (repeatable) starts one router per variant (other
``global.classifiers`` settings, or another checkout's router, e.g. the commit before a change) and
measures them interleaved in the same run.

Goals (printed, never asserted): <= 2.5 encoder passes of router CPU per routed request; req/s at 32
clients >= 3x the 1-client figure; turn 10 of a conversation <= 1.5x turn 1 (with the cache).

    python bench/classifiers_bench.py [--duration 12] [--rounds 2] [--conversations 10] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ROOT,
    Cleanup,
    CpuMeter,
    background_share,
    fmt,
    machine,
    pct,
    pick_port,
    print_machine,
    process_tree,
    start_sims,
    table,
    wait_quiet,
    workdir,
)

from router.local import Stack

DEFAULT_CONFIG = ROOT / "config" / "default.yaml"
GOALS = {"encoder_passes_per_request": 2.5, "rps_ratio_32_over_1": 3.0, "turn10_over_turn1": 1.5}
# Benign prompts that the default config *routes* (no research keywords, not "hard"): a mix of lengths.
PROMPTS = [
    "What is the capital of Australia?",
    "Write a haiku about the sea.",
    "How do I reverse a linked list in Java without recursion?",
    "Find the roots of x^2 - 5x + 6 and show each step of the factorisation.",
    "Summarise the plot of Hamlet in two sentences for a ten year old who has never read it.",
    "My Python script raises a KeyError when I read a dictionary that was loaded from a JSON file; "
    "the key is present when I print the dictionary. What could cause this and how do I fix it?",
    "Plan a relaxed three day weekend trip to Lisbon for two people who like food, old streets and "
    "small museums, with one day trip outside the city and a rough budget for meals and transport.",
    "Explain what a hash map is, how collisions are handled with chaining and with open addressing, "
    "and why the load factor matters for lookups. Keep it short and give one small example in Go.",
]
SYSTEM = (
    "You are a helpful assistant for the support team of a travel company. Answer politely and briefly, "
    "use the customer's language, and when a booking number is mentioned repeat it back so the agent "
    "can check it. Never invent prices; say that an agent will confirm them."
)
USER_TURNS = [
    "Hi, I booked a hotel in Porto for next month and would like to change the dates by two days.",
    "The booking is under my surname. Can you also tell me if breakfast is included in the room rate?",
    "Great. Is there a way to get from the airport to the hotel by metro, and how long does it take?",
    "What are some good places to eat near the river that are not too touristy?",
    "Could you suggest a day trip from Porto that is possible by train?",
    "How early should I book the train tickets, and can I buy them at the station?",
    "Is it usually rainy there in early spring, and what should I pack?",
    "Do museums in Porto close on Mondays like in some other cities?",
    "Can I pay by card in most small restaurants or should I carry cash?",
    "Thanks. Please summarise the changes to my booking so I can forward them to my partner.",
]
ASSISTANT = (
    "Of course. I have noted your request about {topic} for conversation {n}. An agent will confirm the "
    "details shortly; in the meantime here is what usually applies: most travellers find the metro "
    "convenient, restaurants near the river vary a lot in price, and trains to nearby towns leave "
    "every hour from the main station. Let me know if there is anything else I can help with."
)


# --------------------------------------------------------------------------- the unit: one encoder pass


class EncoderUnit:
    """One single-threaded MiniLM-L6 encoder pass (``models/embedding``, batch 1, intra-op threads 1)."""

    def __init__(self, models: Path):
        from classifiers import load_model

        self.model = load_model(models / "embedding", device="cpu", intra_op_threads=1)

    def pass_ms(self, texts: list[str], reps: int = 15) -> float:
        """CPU ms of one pass, median over ``reps``, averaged over ``texts``."""
        m = self.model
        per_text = []
        for t in texts:
            padded = m.tokenizer.pad(m.tokenizer.encode([t]).rows)
            m._forward(padded)  # the bare session run is the unit
            samples = []
            for _ in range(reps):
                c0 = time.thread_time()
                m._forward(padded)
                samples.append((time.thread_time() - c0) * 1000)
            per_text.append(statistics.median(samples))
        return sum(per_text) / len(per_text)


# --------------------------------------------------------------------------- bodies


def prompt_body(prompt: str, tag: str) -> dict[str, Any]:
    return {"model": "vllm-sr/auto", "max_tokens": 16, "messages": [{"role": "user", "content": f"Ticket {tag}: {prompt}"}]}


_WORDS = ("amber", "birch", "cedar", "delta", "ember", "falcon", "garden", "harbor", "island", "juniper")


def words_tag(digits: str) -> str:
    """A unique tag in words: digits read as numbers look like account or id numbers to the PII guard."""
    return "-".join(_WORDS[int(d)] for d in digits if d.isdigit())


def conversation(n: str, turn: int, shared_system: bool = False) -> dict[str, Any]:
    """Turn ``turn`` (1-based) of conversation ``n``: system, earlier user/assistant pairs, the new user
    turn. The system prompt names the conversation (so turn 1 pays for it), or with ``shared_system``
    is one text every conversation sends (an application's fixed prompt: cached from the first one on)."""
    system = SYSTEM if shared_system else f"Conversation {n}. {SYSTEM}"
    msgs: list[dict[str, str]] = [{"role": "system", "content": system}]
    for k in range(turn):
        # Every user turn is new text (the conversation's tag), as in a real conversation.
        msgs.append({"role": "user", "content": f"[{n}] " + USER_TURNS[k].format(n=n)})
        if k < turn - 1:
            topic = USER_TURNS[k].split(" ", 6)[-1][:60].rstrip("?.")
            msgs.append({"role": "assistant", "content": ASSISTANT.format(topic=topic, n=n)})
    return {"model": "vllm-sr/auto", "max_tokens": 16, "messages": msgs}


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    import http.client

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body).encode(), {"content-type": "application/json"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def check_routed(url: str, body: dict[str, Any]) -> str:
    status, headers, data = post(url, body)
    decision = headers.get("x-vsr-selected-decision", "?")
    if status != 200 or headers.get("x-vsr-response-path", "routed") != "routed":
        raise RuntimeError(f"not routed: HTTP {status}, decision {decision}: {data[:200]!r}")
    if decision in ("deep_research", "block_jailbreak", "block_secrets"):
        raise RuntimeError(f"the bench prompt went to {decision!r}; pick prompts the default config routes")
    return decision


# --------------------------------------------------------------------------- load


_WRK_LUA = """
counter = 0
prompts = {prompts}
words = {words}
local function tag(n)
  return (string.gsub(tostring(n), "%d", function(d) return words[tonumber(d) + 1] .. "-" end))
end
threads = {{}}
decisions = {{}}
setup = function(thread)
  table.insert(threads, thread)
end
response = function(status, headers, body)
  local d = headers["x-vsr-selected-decision"] or headers["X-Vsr-Selected-Decision"] or ("HTTP " .. status)
  decisions[d] = (decisions[d] or 0) + 1
end
request = function()
  counter = counter + 1
  local p = prompts[(counter % #prompts) + 1]
  local body = '{{"model":"vllm-sr/auto","max_tokens":16,"messages":[{{"role":"user","content":"Ticket {seed}' .. tag(counter) .. ': ' .. p .. '"}}]}}'
  return wrk.format("POST", "/v1/chat/completions", {{["Content-Type"] = "application/json"}}, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  local parts = {{}}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("decisions") or {{}}) do
      table.insert(parts, string.format('"%s": %d', k, v))
    end
  end
  io.write(string.format('WRKJSON {{"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p99_us": %d, "decisions": {{%s}}}}\\n',
    summary.requests, summary.duration, e.status + e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), table.concat(parts, ", ")))
end
"""


def _lua_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def load_wrk(url: str, concurrency: int, duration: float, seed: str, meter: CpuMeter, wd: Path) -> dict[str, Any]:
    script = wd / f"load-{seed}.lua"
    script.write_text(
        _WRK_LUA.format(
            prompts="{" + ", ".join(_lua_string(p) for p in PROMPTS) + "}",
            seed=words_tag(seed) + "-",
            words="{" + ", ".join(_lua_string(w) for w in _WORDS) + "}",
        )
    )
    meter.start()
    proc = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--timeout", "20s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=duration + 90,
    )
    cpu = meter.stop()
    m = re.search(r"WRKJSON (\{.*\})", proc.stdout)
    if proc.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-400:]} {proc.stderr[-400:]}")
    d = json.loads(m.group(1))
    secs = d["duration_us"] / 1e6
    return {
        "requests": d["requests"],
        "errors": d["errors"],
        "seconds": secs,
        "p50_ms": d["p50_us"] / 1000,
        "p99_ms": d["p99_us"] / 1000,
        "cpu_s": cpu,
        "decisions": d.get("decisions", {}),
    }


def load_aiohttp(url: str, concurrency: int, duration: float, seed: str, meter: CpuMeter) -> dict[str, Any]:
    import aiohttp

    async def main() -> tuple[list[float], int, float]:
        lat: list[float] = []
        errors = 0
        counter = 0
        decisions: dict[str, int] = {}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            t0 = time.perf_counter()
            end = t0 + duration

            async def worker() -> None:
                nonlocal errors, counter
                while time.perf_counter() < end:
                    counter += 1
                    body = prompt_body(PROMPTS[counter % len(PROMPTS)], words_tag(f"{seed}{counter}"))
                    s = time.perf_counter()
                    async with session.post(url, json=body) as resp:
                        await resp.read()
                        errors += resp.status != 200
                        d = resp.headers.get("x-vsr-selected-decision", f"HTTP {resp.status}")
                        decisions[d] = decisions.get(d, 0) + 1
                    lat.append((time.perf_counter() - s) * 1000)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return lat, errors, time.perf_counter() - t0, decisions

    meter.start()
    lat, errors, secs, decisions = asyncio.run(main())
    cpu = meter.stop()
    return {
        "requests": len(lat),
        "errors": errors,
        "seconds": secs,
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "cpu_s": cpu,
        "decisions": decisions,
    }


def run_load(url: str, concurrency: int, duration: float, meter: CpuMeter, wd: Path) -> dict[str, Any]:
    seed = f"{random.randint(0, 10**9):09d}"  # never seen before: the result cache cannot answer
    full = f"{url}/v1/chat/completions"
    use_wrk = (
        os.environ.get("BENCH_LOAD_TOOL", "") != "aiohttp"
        and subprocess.run(["sh", "-c", "command -v wrk"], capture_output=True).returncode == 0
    )
    if use_wrk:
        return load_wrk(full, concurrency, duration, seed, meter, wd)
    return load_aiohttp(full, concurrency, duration, seed, meter)


def combine(runs: list[dict[str, Any]], unit_ms: float) -> dict[str, Any]:
    """Rounds of one (router, concurrency): req/s over the summed time, CPU per request, answers seen."""
    reqs = sum(r["requests"] for r in runs)
    secs = sum(r["seconds"] for r in runs)
    cpu: dict[str, float] = {}
    for r in runs:
        for k, v in r["cpu_s"].items():
            cpu[k] = cpu.get(k, 0.0) + v
    router_ms = 1000 * cpu.get("router", 0.0) / max(reqs, 1)
    decisions: dict[str, int] = {}
    for r in runs:
        for k, v in r.get("decisions", {}).items():
            decisions[k] = decisions.get(k, 0) + v
    return {
        "requests": reqs,
        "errors": sum(r["errors"] for r in runs),
        "rps": round(reqs / secs, 1),
        "decisions": decisions,
        "rps_rounds": [round(r["requests"] / r["seconds"], 1) for r in runs],
        "p50_ms": round(statistics.mean(r["p50_ms"] for r in runs), 1),
        "p99_ms": round(statistics.mean(r["p99_ms"] for r in runs), 1),
        "router_cpu_ms_per_request": round(router_ms, 2),
        "encoder_passes_per_request": round(router_ms / unit_ms, 2),
        "cpu_ms_per_request": {
            k: round(1000 * v / max(reqs, 1), 2)
            for k, v in cpu.items()
            if k not in ("wall", "background", "load_generator+bench")
        },
        "background_cpu_share": round(background_share(cpu), 3),
    }


# --------------------------------------------------------------------------- conversation


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of every thread of ``pids``, from the scheduler's nanosecond counters (``stat``'s
    10 ms ticks are too coarse for a few requests)."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


def conversation_costs(url: str, router_pids: Any, convs: int, turns: int, shared_system: bool = False) -> dict[str, Any]:
    """Router CPU per turn: every conversation's turn k is sent (one at a time) before any turn k+1."""
    run = f"{random.randint(0, 10**4):04d}"  # a new conversation tag per run and conversation
    names = [words_tag(f"{run}{i:02d}") for i in range(convs)]
    per_turn: list[float] = []
    decisions: set[str] = set()
    for turn in range(1, turns + 1):
        pids = router_pids()
        c0 = cpu_seconds(pids)
        for n in names:
            decisions.add(check_routed(url, conversation(n, turn, shared_system)))
        per_turn.append(1000 * (cpu_seconds(pids) - c0) / convs)
    return {
        "cpu_ms_per_turn": [round(x, 2) for x in per_turn],
        "last_over_first": round(per_turn[-1] / per_turn[0], 2) if per_turn[0] > 0 else None,
        "last_over_second": round(per_turn[-1] / per_turn[1], 2) if len(per_turn) > 1 and per_turn[1] > 0 else None,
        "decisions": sorted(decisions),
    }


# --------------------------------------------------------------------------- model latency (opt-in)


def model_latency(models: Path, iters: int) -> dict[str, Any]:
    from classifiers import load_model

    out = {}
    for name in ("embedding", "jailbreak", "pii"):
        if not (models / name / "metadata.json").is_file():
            continue
        m = load_model(models / name, device="cpu")
        for _ in range(5):
            m.run([PROMPTS[0]])
        samples = []
        for _ in range(iters):
            t = time.perf_counter()
            m.run([PROMPTS[0]])
            samples.append((time.perf_counter() - t) * 1000)
        out[name] = {"p50_ms": round(pct(samples, 50), 2), "p99_ms": round(pct(samples, 99), 2)}
    return out


# --------------------------------------------------------------------------- main


def cache_setting_supported() -> bool:
    from router.config.schema import ClassifierSettings

    return "result_cache_mb" in ClassifierSettings.model_fields


def write_config(wd: Path, name: str, base: dict[str, Any], classifiers: dict[str, Any]) -> Path:
    cfg = copy.deepcopy(base)
    cfg.setdefault("global", {}).setdefault("classifiers", {}).update(classifiers)
    path = wd / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME[:key=value,...][@SOURCE_TREE]``: global.classifiers settings, and optionally another checkout
    of this repository whose router to run (a before/after comparison in one run)."""
    text, _, code = text.partition("@")
    name, _, rest = text.partition(":")
    settings = {k.strip(): yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in rest.split(",") if kv.strip())}
    if code:
        settings["@code"] = str(Path(code).resolve())
    return name.strip(), settings


def start_stack(cleanup: Cleanup, wd: Path, name: str, base: dict[str, Any], settings: dict[str, Any]) -> Stack:
    (wd / name).mkdir()
    settings = dict(settings)
    code = settings.pop("@code", None)
    path = write_config(wd, name, base, settings)
    stack = cleanup.stack(
        Stack(
            path,
            listen_port=pick_port(),
            grpc_port=pick_port(),
            admin_port=pick_port(),
            envoy_admin_port=pick_port(),
            internal_port=pick_port(),
            workdir=wd / name,
            quiet=True,
            log_format="json",
        )
    )
    here = os.getcwd()
    if code:  # `python -m router.cli` imports the router from the working directory it starts in
        os.chdir(code)
    try:
        return stack.start(timeout=180)
    finally:
        os.chdir(here)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--phases", default="load,conversation", help="load,conversation[,models]")
    ap.add_argument("--duration", type=float, default=12.0, help="seconds of load per concurrency, variant and round")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (every variant at c1, c32, then again)")
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--conversations", type=int, default=10, help="10-turn conversations per series")
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--settle", type=float, default=15.0, help="wait up to this long for a quieter machine first")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 s of load, one round, 3 conversations")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME[:KEY=VALUE,...]",
        help="a router with these global.classifiers settings, measured interleaved with the others "
        "(repeatable), e.g. --variant default --variant intra2:intra_op_threads=2; the first one also "
        "runs the conversation phase",
    )
    ap.add_argument("--json", type=Path, help="also write the JSON result here")
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.conversations, args.settle = 3.0, 1, 3, 0.0
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    conc = [int(c) for c in args.concurrency.split(",")]
    variants = dict(parse_variant(v) for v in args.variant) or {"default": {}}

    info = machine()
    print_machine(info)
    info["loadavg_before"] = os.getloadavg()
    result: dict[str, Any] = {"machine": info, "goals": GOALS, "variants": variants}
    if "models" in phases:
        result["model_latency"] = model_latency(args.models, 100 if args.quick else 300)
        print(
            table(
                ["model (1 short prompt)", "p50 ms", "p99 ms"],
                [[n, fmt(r["p50_ms"]), fmt(r["p99_ms"])] for n, r in result["model_latency"].items()],
            )
        )
    if not phases & {"load", "conversation"}:
        print("\nJSON: " + json.dumps(result))
        return 0

    unit = EncoderUnit(args.models)
    base = yaml.safe_load(DEFAULT_CONFIG.read_text())
    wd = workdir("classifiers-bench-")
    first = next(iter(variants))
    with Cleanup() as cleanup:
        specs = []
        for b in base["backends"]:
            port = pick_port()
            b["endpoint"] = f"http://127.0.0.1:{port}"
            served = [m.get("served_model_id", m["name"]) for m in base["models"] if m["backend"] == b["name"]]
            specs.append(
                {
                    "name": b["name"],
                    "port": port,
                    "models": served,
                    "latency_ms": 0,
                    "tps": 0,
                    "max_tokens": 16,
                    "request_log_size": 0,
                }
            )
        sim = start_sims(cleanup, specs, wd)
        stacks = {name: start_stack(cleanup, wd, name, base, settings) for name, settings in variants.items()}
        if "conversation" in phases and cache_setting_supported():
            stacks["no-cache"] = start_stack(cleanup, wd, "no-cache", base, {**variants[first], "result_cache_mb": 0})
        # The conversation phase reads every variant, and the first one without the cache too.
        everything = lambda: [p for s in stacks.values() for pr in s.procs.values() for p in process_tree(pr.pid)]  # noqa: E731
        decisions = sorted(
            {
                check_routed(s.url, prompt_body(p, words_tag(f"{i}0123456789")))
                for s in stacks.values()
                for i, p in enumerate(PROMPTS)
            }
        )
        print(
            f"workdir {wd}; routers: "
            + ", ".join(f"{n} {s.url}" for n, s in stacks.items())
            + f"; bench prompts route to {decisions}",
            flush=True,
        )
        if args.settle:
            share = wait_quiet(args.settle)
            print(f"background CPU before measuring: {100 * share:.0f}% of all cores", flush=True)

        tagged = [f"Ticket {words_tag(f'012345678{i}')}: {p}" for i, p in enumerate(PROMPTS)]
        units = [unit.pass_ms(tagged)]  # before and after the measurements; their mean is the unit
        raw: dict[str, dict[int, list[dict[str, Any]]]] = {v: {c: [] for c in conc} for v in variants}
        if "load" in phases:
            for _ in range(args.rounds):
                for v in variants:
                    st = stacks[v]
                    for c in conc:
                        meter = CpuMeter(
                            {
                                "router": lambda s_=st: process_tree(s_.procs["router"].pid),
                                "envoy": lambda s_=st: [s_.procs["envoy"].pid],
                                "sim": lambda: [sim.pid],
                            },
                            others=everything,
                        )
                        r = run_load(st.url, c, args.duration, meter, wd)
                        raw[v][c].append(r)
                        print(
                            f"  load {v} c{c}: {r['requests'] / r['seconds']:.1f} req/s, router "
                            f"{1000 * r['cpu_s']['router'] / max(r['requests'], 1):.1f} CPU-ms/req, background "
                            f"{100 * background_share(r['cpu_s']):.0f}%",
                            flush=True,
                        )
        conv: dict[str, dict[str, Any]] = {}
        if "conversation" in phases:
            for st in stacks.values():  # first requests of a new shape pay one-off allocations: not measured
                for turn in range(1, args.turns + 1):
                    check_routed(st.url, conversation("warm-up", turn))
            series = [(v, v, False) for v in variants] + [(f"{first}, one system prompt for all", first, True)]
            series += [(f"{first}, no cache", "no-cache", False)] if "no-cache" in stacks else []
            for label, name, shared_system in series:
                st = stacks[name]
                pids = lambda s_=st: process_tree(s_.procs["router"].pid)  # noqa: E731
                conv[label] = conversation_costs(st.url, pids, args.conversations, args.turns, shared_system)
                print(f"  conversation ({label}): " + " ".join(fmt(x, 1) for x in conv[label]["cpu_ms_per_turn"]), flush=True)
        units.append(unit.pass_ms(tagged))
    unit_ms = statistics.mean(units)
    result["encoder_pass_ms"] = {"measured": [round(u, 3) for u in units], "unit_ms": round(unit_ms, 3)}
    if "load" in phases:
        result["load"] = {v: {str(c): combine(rs, unit_ms) for c, rs in per.items()} for v, per in raw.items()}
    if conv:
        for r in conv.values():
            r["encoder_passes_per_turn"] = [round(x / unit_ms, 2) for x in r["cpu_ms_per_turn"]]
        result["conversation"] = conv
    info["loadavg_after"] = os.getloadavg()
    report(result, args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    info, unit = result["machine"], result["encoder_pass_ms"]
    print(
        f"\nUnit: one single-threaded MiniLM-L6 encoder pass of the bench prompts = {unit['unit_ms']:.2f} CPU-ms "
        f"(before / after the measurements: {' / '.join(fmt(u) for u in unit['measured'])} ms); load average "
        f"{info['loadavg_before'][0]:.1f} before, {info['loadavg_after'][0]:.1f} after"
    )
    if "load" in result:
        rows = []
        for v, per in result["load"].items():
            for c, r in per.items():
                rows.append(
                    [
                        v,
                        c,
                        f"{r['rps']:.1f}",
                        fmt(r["p50_ms"], 1),
                        fmt(r["p99_ms"], 1),
                        fmt(r["router_cpu_ms_per_request"]),
                        fmt(r["encoder_passes_per_request"]),
                        f"{100 * r['background_cpu_share']:.0f}%",
                        str(r["errors"]),
                        ", ".join(f"{k} {n}" for k, n in sorted(r["decisions"].items())),
                    ]
                )
            if "1" in per and "32" in per:
                per["rps_ratio_32_over_1"] = round(per["32"]["rps"] / max(per["1"]["rps"], 1e-9), 2)
        print(
            table(
                [
                    "router",
                    "clients",
                    "req/s",
                    "p50 ms",
                    "p99 ms",
                    "router CPU-ms/req",
                    "encoder passes/req",
                    "background",
                    "errors",
                    "answers",
                ],
                rows,
            )
        )
        for v, per in result["load"].items():
            if "rps_ratio_32_over_1" in per:
                print(
                    f"{v}: req/s at 32 clients / at 1 client {per['rps_ratio_32_over_1']:.2f}x "
                    f"(goal >= {GOALS['rps_ratio_32_over_1']}x); encoder passes per request at 1 / 32 clients "
                    f"{per['1']['encoder_passes_per_request']} / {per['32']['encoder_passes_per_request']} "
                    f"(goal <= {GOALS['encoder_passes_per_request']})"
                )
    if "conversation" in result:
        rows = [
            [name, *(fmt(x, 1) for x in r["cpu_ms_per_turn"]), fmt(r["last_over_first"]), fmt(r["last_over_second"])]
            for name, r in result["conversation"].items()
        ]
        print(
            f"\nRouter CPU-ms per turn of a {args.turns}-turn conversation ({args.conversations} conversations per "
            "series, one request at a time; each variant with its default settings, the result cache on where the "
            "router has one)"
        )
        print(table(["series", *(f"t{k}" for k in range(1, args.turns + 1)), "last/first", "last/second"], rows))
        print(
            "New text per turn: turn 1 = the system prompt (unless shared) + one user message; every later turn = "
            "the previous assistant reply + one user message."
        )
    print("\nJSON: " + json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
