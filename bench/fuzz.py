"""Hostile-input fuzzing through the real Envoy + router + simulated backends (`make fuzz`).

A seeded corpus (tests/fuzz/corpus.py) of malformed, mistyped, deeply nested, huge and hostile
requests, odd headers, methods and paths, is sent case by case; every answer is checked against the
invariants in tests/fuzz/invariants.py (expected status, OpenAI-shaped errors, no 500, nothing
guarded reaches a backend, no header echo, router alive and serving, RSS bounded). Then Envoy's own
answers with a backend down and with the router down are checked, and Fusion is run against a
misbehaving backend (tests/fuzz/upstream.py; ``--no-upstream`` skips it).

    .venv/bin/python bench/fuzz.py --cases 300 --seed 1
    .venv/bin/python bench/fuzz.py --cases 5000 --seed 7 --profile full --json /tmp/fuzz.json
    .venv/bin/python bench/fuzz.py --seed 1 --only guard_card-0007 -v   # one case again

Exit status: 0 when no invariant was violated, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fuzz import corpus
from tests.fuzz.invariants import INVARIANTS
from tests.fuzz.runner import (
    CaseResult,
    Report,
    Target,
    default_sims,
    down_checks,
    load_default_config,
    new_report,
    run_cases,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=300, help="number of request cases (default 300, the CI size)")
    p.add_argument("--seed", type=int, default=1, help="corpus seed (default 1)")
    p.add_argument(
        "--profile",
        choices=("ci", "full"),
        default="ci",
        help="ci: bodies up to ~1 MB (+ over-limit ones); full: up to the 16 MiB limit, 50k messages",
    )
    p.add_argument("--category", action="append", help=f"only these categories (repeatable): {', '.join(corpus.CATEGORIES)}")
    p.add_argument("--only", action="append", help="only these case ids (e.g. guard_card-0007), repeatable")
    p.add_argument("--body-mode", choices=("FULL_DUPLEX_STREAMED", "BUFFERED"), default="FULL_DUPLEX_STREAMED")
    p.add_argument("--rss-growth-mb", type=float, default=512.0, help="allowed router RSS growth over the warm baseline")
    p.add_argument(
        "--rss-kill-mb",
        type=float,
        default=3072.0,
        help="the harness SIGKILLs its router above this RSS (protects a shared machine); recorded as a violation",
    )
    p.add_argument("--no-down-checks", action="store_true", help="skip the backend-down / router-down checks at the end")
    p.add_argument(
        "--no-upstream",
        action="store_true",
        help="skip Fusion against a misbehaving backend (tests/fuzz/upstream.py; every entry x stream combination with --profile full)",
    )
    p.add_argument("--json", type=Path, help="write the full report here")
    p.add_argument(
        "--markdown", type=Path, help="write the summary and violation checklist as Markdown (for docs/reliability.md)"
    )
    p.add_argument("--render", type=Path, metavar="REPORT_JSON", help="only turn an earlier --json report into --markdown")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per case")
    return p.parse_args(argv)


def select(args: argparse.Namespace) -> list[corpus.Case]:
    if args.only:
        out = []
        for cid in args.only:
            name, _, k = cid.rpartition("-")
            if name not in corpus.CATEGORIES or not k.isdigit():
                raise SystemExit(f"--only {cid}: expected <category>-<number>, e.g. guard_card-0007")
            gen = corpus.CATEGORIES[name][0]
            rng = __import__("random").Random(f"{args.seed}:{name}:{int(k)}")
            out.append(gen(corpus.Builder(f"{name}-{int(k):04d}", name, ""), rng, int(k), args.profile))
        return out
    return corpus.generate(args.seed, args.cases, args.profile, args.category)


def print_summary(report: Report) -> None:
    d = report.as_dict()
    print()
    print(
        f"fuzz: {d['cases']} cases (seed {report.seed}, profile {report.profile}, {report.body_mode}), "
        f"{d['cases_with_violations']} with violations, {d['violations']} violations, "
        f"{report.restarts} stack restarts, {d['wall_s']} s"
    )
    print(
        f"router RSS: baseline {d['rss']['baseline_mb']} MB, max peak {d['rss']['max_peak_mb']} MB "
        f"(allowed +{report.rss_growth_mb:.0f} MB); {d['retried_after_shedding']} cases shed once and asked again; "
        f"load average at the end {d['loadavg']}"
    )
    print()
    rows = [[c, str(v["cases"]), str(v["failing"])] for c, v in sorted(d["per_category"].items())]
    print(_table(["category", "cases", "failing"], rows))
    if not d["groups"]:
        print("\nno invariant violated")
        return
    print()
    rows = [
        [
            g["category"],
            g["invariant"],
            str(g["count"]),
            g["example"]["case_id"],
            str(g["example"]["status"]),
            g["example"]["detail"][:90],
        ]
        for g in d["groups"]
    ]
    print(_table(["category", "invariant", "count", "example", "status", "detail"], rows))


def markdown(d: dict, command: str) -> str:
    """A run as a Markdown section for docs/reliability.md: summary, then one checklist row per
    (category, invariant) with an example case, its request in short and what came back."""
    repro = {r["id"]: r["repro"] for r in d["results"]}
    cats = d["per_category"]
    lines = [
        f"### {d['started']}: `{command}`",
        "",
        (
            f"Commit `{d.get('commit', '?')}`, {d['body_mode']}, seed {d['seed']}, profile {d['profile']}: {d['cases']} cases, "
            f"{d['cases_with_violations']} with violations ({d['violations']} violations), {d['restarts']} stack restarts, "
            f"{d['wall_s']} s. Router RSS baseline {d['rss']['baseline_mb']} MB, highest peak {d['rss']['max_peak_mb']} MB. "
            f"Load average at the end: {d.get('loadavg', '?')}."
        ),
        "",
        "| category | cases | failing |",
        "| --- | --- | --- |",
        *[f"| {c} | {v['cases']} | {v['failing']} |" for c, v in sorted(cats.items())],
        "",
        "| category | invariant | count | example | got | request (short) | detail |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for g in d["groups"]:
        ex = g["example"]
        req = repro.get(ex["case_id"], ex["variant"])
        lines.append(
            f"| {g['category']} | {g['invariant']} | {g['count']} | `{ex['case_id']}` {_md(ex['variant'], 60)} | "
            f"{ex['status']} {_md(ex['body'], 90)} | {_md(req, 200)} | {_md(ex['detail'], 140)} |"
        )
    return "\n".join(lines) + "\n"


def _md(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|").replace("`", "'")


def _commit() -> str:
    try:
        import subprocess

        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, timeout=10, check=False
        )
        return out.stdout.strip() or "?"
    except OSError:
        return "?"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "bench/fuzz.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.render:
        text = markdown(json.loads(args.render.read_text()), command)
        if args.markdown:
            args.markdown.write_text(text)
        print(text)
        return 0
    cases = select(args)
    workroot = Path(tempfile.mkdtemp(prefix="fusion-fuzz-"))
    print(f"fuzz: {len(cases)} cases, seed {args.seed}, profile {args.profile}; workdir {workroot}", flush=True)
    report = new_report(args.seed, args.profile, args.body_mode, args.rss_growth_mb)
    started = time.monotonic()

    done = 0

    def progress(r: CaseResult) -> None:
        nonlocal done
        done += 1
        n = done
        if args.verbose or r.violations:
            flag = ",".join(sorted({v.invariant for v in r.violations})) or "ok"
            print(
                f"[{n}] {r.case.id} {r.case.variant[:70]} -> {r.status} ({r.elapsed_s:.2f}s, {r.rss_peak_mb:.0f} MB) {flag}",
                flush=True,
            )
        elif n % 50 == 0:
            print(f"[{n}] ...", flush=True)

    target = Target(workroot, load_default_config(), default_sims(), args.body_mode, args.rss_kill_mb)
    try:
        target.start()
        report.baseline_mb = target.baseline_mb
        run_cases(target, cases, report, args.rss_growth_mb, progress)
        if not args.no_down_checks and not args.only:
            report.extra += down_checks(target)
    except KeyboardInterrupt:
        print("interrupted; stopping the stack", file=sys.stderr)
    finally:
        target.stop()
    if not args.no_upstream and not args.only:
        from tests.fuzz import upstream

        report.results += upstream.run(
            workroot, args.rss_kill_mb, args.rss_growth_mb, progress=progress, every_combination=args.profile == "full"
        )
    report.wall_s = time.monotonic() - started
    print_summary(report)
    d = report.as_dict() | {"commit": _commit(), "command": command}
    if args.json:
        args.json.write_text(json.dumps(d, indent=2))
        print(f"\nreport: {args.json}")
    if args.markdown:
        args.markdown.write_text(markdown(d, command))
        print(f"markdown: {args.markdown}")
    print("\ninvariants:\n" + "\n".join(f"  {k}: {v}" for k, v in INVARIANTS.items()))
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
