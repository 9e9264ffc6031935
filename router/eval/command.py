"""``fusion-router eval``: argument parsing and the command (registered by ``router.cli``)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from pathlib import Path

from router.eval.configs import (
    DEFAULT_ENDPOINT,
    ConfigurationError,
    EvalSuite,
    configurations_from_flags,
    describe,
    load_suite,
)
from router.eval.dataset import DatasetError, Item, load_datasets
from router.eval.report import build_report, markdown
from router.eval.results import ResultStore, current, warn
from router.eval.stats import DEFAULT_RESAMPLES, DEFAULT_SEED

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_DATASETS = ("arithmetic.jsonl", "capitals.jsonl", "mmlu.jsonl", "open.jsonl")

EPILOG = """examples:
  # two local models alone, Fusion of both, self-fusion, and a looper slug, on 20 items per slice
  fusion-router eval --solo smollm2-135m --solo gemma3-270m --fusion smollm2-135m+gemma3-270m@gemma3-270m \\
      --self-fusion smollm2-135m@gemma3-270m --model remom=vllm-sr/remom --limit 20 --out .cache/eval/quick
  # a suite file (configurations, endpoints, judge) against your own vLLM pods; the key from $MY_KEY
  fusion-router eval --suite my-suite.yaml --endpoint https://llm.example/v1 --api-key-env MY_KEY
  # rebuild report.md/json and chart.png from results.jsonl without calling anything
  fusion-router eval --suite my-suite.yaml --out .cache/eval/quick --report-only

Rerunning with the same --out resumes: finished (configuration, item) pairs are skipped, failed calls
are retried. Ctrl-C keeps what finished and writes the report of it."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "eval",
        help="measure answer quality, cost and latency of models, Fusion and loopers on an OpenAI endpoint",
        description="Run eval items against configurations (solo models, Fusion, self-fusion, looper slugs) on any "
        "OpenAI-compatible endpoint; score closed answers by match and open ones by a judge with a rubric; report "
        "quality with paired bootstrap 95% CIs against the best solo model, cost per answer and latency, as "
        "Markdown, JSON and a PNG chart.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    p.add_argument("--suite", help="YAML/JSON suite: endpoint, judge, datasets, configurations")
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="JSONL",
        help=f"eval items (repeatable; default: the bundled {', '.join(DEFAULT_DATASETS)})",
    )
    p.add_argument("--solo", action="append", default=[], metavar="MODEL", help="a model answering alone")
    p.add_argument(
        "--fusion", action="append", default=[], metavar="A+B[@JUDGE]", help="a Fusion request plugin with this panel (and judge)"
    )
    p.add_argument(
        "--self-fusion",
        action="append",
        default=[],
        metavar="MODEL[@JUDGE]",
        help="Fusion with the same model twice on the panel",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help="any model, auto alias or looper slug (e.g. remom=vllm-sr/remom)",
    )
    p.add_argument("--endpoint", help=f"OpenAI base URL (default: the suite's, else {DEFAULT_ENDPOINT})")
    p.add_argument("--api-key-env", help="environment variable with the API key (default: none needed)")
    p.add_argument("--judge-model", help="model that grades rubric items (default: the suite's; none: patterns)")
    p.add_argument("--judge-endpoint", help="OpenAI base URL of the judge (default: --endpoint)")
    p.add_argument("--judge-api-key-env", help="environment variable with the judge's API key")
    p.add_argument("--baseline", help="configuration to compare against (default: the best solo)")
    p.add_argument("--out", default=".cache/eval/run", help="folder for results.jsonl, report.md/json, chart.png")
    p.add_argument("--limit", type=int, help="first N items of each slice")
    p.add_argument("--slices", help="comma-separated slices to keep (e.g. arithmetic,capitals)")
    p.add_argument("--concurrency", type=int, help="requests in flight (default: the suite's, else 2)")
    p.add_argument("--max-tokens", type=int, help="max_tokens per answer (default: the suite's, else 256)")
    p.add_argument("--timeout", type=float, help="seconds per request (default: the suite's, else 300)")
    p.add_argument("--bootstrap", type=int, default=DEFAULT_RESAMPLES, help=f"resamples (default {DEFAULT_RESAMPLES})")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"bootstrap seed (default {DEFAULT_SEED})")
    p.add_argument("--title", default="fusion-router eval", help="report and chart title")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from results.jsonl")
    p.add_argument(
        "--rescore", action="store_true", help="score the stored answers again with the current scorers first (no model calls)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-chart", action="store_true", help="skip the PNG (no matplotlib needed)")
    p.set_defaults(func=run_command)
    return p


def build_suite(args: argparse.Namespace) -> EvalSuite:
    suite = load_suite(args.suite) if args.suite else EvalSuite()
    updates = {
        "endpoint": args.endpoint,
        "api_key_env": args.api_key_env,
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "timeout_seconds": args.timeout,
        "baseline": args.baseline,
    }
    data = suite.model_dump()
    data.update({k: v for k, v in updates.items() if v is not None})
    if args.judge_model:
        data["judge"] = {**(data.get("judge") or {}), "model": args.judge_model}
    if args.judge_endpoint or args.judge_api_key_env:
        if not data.get("judge"):
            raise ConfigurationError("--judge-endpoint/--judge-api-key-env: no judge model (--judge-model)")
        data["judge"].update(
            {k: v for k, v in {"endpoint": args.judge_endpoint, "api_key_env": args.judge_api_key_env}.items() if v}
        )
    flags = configurations_from_flags(solo=args.solo, fusion=args.fusion, self_fusion=args.self_fusion, model=args.model)
    data["configurations"] = [*data["configurations"], *(c.model_dump() for c in flags)]
    from pydantic import ValidationError

    try:
        built = EvalSuite.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(describe(exc)) from None
    if not built.configurations:
        raise ConfigurationError("no configurations: give --suite FILE or --solo/--fusion/--self-fusion/--model")
    return built


def prepare(args: argparse.Namespace) -> tuple[EvalSuite, list[Item]]:
    """The suite and items of a command line; ConfigurationError/DatasetError name what is wrong."""
    suite = build_suite(args)
    datasets = args.data or suite.datasets or [str(DATA_DIR / name) for name in DEFAULT_DATASETS]
    slices = {s.strip() for s in args.slices.split(",") if s.strip()} if args.slices else None
    items = load_datasets(datasets, limit=args.limit, slices=slices)
    if not items:
        raise DatasetError("no items left after --slices/--limit")
    return suite, items


def interruptible() -> None:
    """Ctrl-C and SIGTERM both end the run the same way: finished answers kept, report written.

    A job started in the background by a non-interactive shell inherits SIGINT ignored; the default
    handler is put back so ``kill -INT`` works there too."""

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _terminate)


def rescore(store: ResultStore, items: list[Item]) -> int:
    """Score every stored answer of these items again; the file keeps one line per pair."""
    from router.eval.scoring import rescored

    by_id = {i.id: i for i in items}
    records = store.load()
    changed = 0
    for key, record in records.items():
        item = by_id.get(record.item_id)
        if item is not None:
            new = rescored(item, record)
            changed += new != record
            records[key] = new
    store.rewrite(records.values())
    return changed


def run_command(args: argparse.Namespace) -> int:
    from router.observability.logging import configure_logging

    configure_logging("console", "warning")
    interruptible()
    try:
        suite, items = prepare(args)
    except (ConfigurationError, DatasetError) as exc:
        print(f"fusion-router eval: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    store = ResultStore(out / "results.jsonl")
    interrupted = False
    if args.rescore:
        print(f"fusion-router eval: {rescore(store, items)} stored answers changed when scored again", file=sys.stderr)
    if not args.report_only:
        try:  # the openai client is the eval extra's; the router itself does not need it
            from router.eval.runner import Runner
        except ImportError as exc:
            print(f"fusion-router eval: {exc.name} is not installed (pip install 'fusion-router[eval]')", file=sys.stderr)
            return 2
        runner = Runner(suite, items, store, progress=not args.no_progress)
        try:
            outcome = asyncio.run(runner.run())
        except ConfigurationError as exc:
            print(f"fusion-router eval: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # SIGTERM, or a second Ctrl-C while cancelling: records on disk are whole
            outcome = None
            interrupted = True
            print("fusion-router eval: interrupted - rerun the same command to resume", file=sys.stderr)
        if outcome is not None:
            interrupted = outcome.interrupted
            for message in outcome.warnings:
                warn(message)
            print(
                f"fusion-router eval: {outcome.finished} answers this run, {outcome.reused} reused from "
                f"{store.path}; {outcome.errors} errors, {outcome.unscored} unscored"
                + ("; interrupted - rerun the same command to resume" if interrupted else ""),
                file=sys.stderr,
            )
    records = current(ResultStore(store.path).load(), {c.name: c.fingerprint(suite) for c in suite.configurations})
    report = build_report(suite, items, records, title=args.title, resamples=args.bootstrap, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    (out / "report.md").write_text(text)
    (out / "report.json").write_text(report.model_dump_json(indent=2) + "\n")
    written = [out / "report.md", out / "report.json"]
    if not args.no_chart:
        try:
            from router.eval.chart import draw
        except ImportError:
            warn("no chart: matplotlib is not installed (pip install 'fusion-router[eval]')")
        else:
            try:
                png = draw(report, out / "chart.png")
            except ImportError:
                warn("no chart: matplotlib is not installed (pip install 'fusion-router[eval]')")
            else:
                if png is not None:
                    written.append(png)
    sys.stdout.write(text)
    print("fusion-router eval: wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 130 if interrupted else 0
