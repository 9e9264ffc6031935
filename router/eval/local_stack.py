"""``make eval``: start the local real-model stack, run ``fusion-router eval`` against it, stop it.

The stack is the one ``make run-llm`` runs - llama-server processes (built by ``make llm``) behind
the router and a real Envoy, on ``config/llm.yaml`` - but on free ports, so it does not collide with
a stack a developer already has up. Every process is started in its own session and stopped by PID.
Arguments this module does not know are passed to ``fusion-router eval``; the endpoint is this stack.

    python -m router.eval.local_stack --suite router/eval/data/suites/local-llm.yaml --limit 5 --out /tmp/e
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "config" / "llm.yaml"
DEFAULT_SERVERS = ROOT / "config" / "llm-servers.yaml"


def _with_free_ports(config_path: Path, workdir: Path) -> Path:
    """A copy of the router config whose loopback backends listen on free ports."""
    from router.local import free_port

    data = yaml.safe_load(config_path.read_text())
    for backend in data.get("backends") or []:
        endpoint = backend.get("endpoint")
        if endpoint and urlsplit(endpoint).hostname in ("127.0.0.1", "localhost"):
            backend["endpoint"] = f"http://127.0.0.1:{free_port()}"
    path = workdir / "router.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m router.eval.local_stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="router config (default config/llm.yaml)")
    parser.add_argument(
        "--servers", type=Path, default=DEFAULT_SERVERS, help="llama-server file (default config/llm-servers.yaml)"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the stack's logs (kept anyway when it fails)")
    args, rest = parser.parse_known_args(argv)

    from router.cli import build_parser
    from router.cli import main as cli_main
    from router.config import ConfigError, load_config
    from router.eval.command import interruptible, prepare
    from router.eval.configs import ConfigurationError
    from router.eval.dataset import DatasetError
    from router.llamacpp import LlamaCppError, load_install, specs_for, start_servers, stop_servers
    from router.local import Stack, free_port

    # Check the eval's own arguments before minutes go into loading models.
    eval_argv = ["eval", *rest, "--endpoint", "http://127.0.0.1:1/v1"]
    try:
        prepare(build_parser().parse_args(eval_argv))
    except (ConfigurationError, DatasetError) as exc:
        print(f"eval: {exc}", file=sys.stderr)
        return 2
    interruptible()  # SIGTERM/SIGINT while models load still stops everything this started
    workdir = Path(tempfile.mkdtemp(prefix="fusion-router-eval-"))
    try:
        config_path = _with_free_ports(args.config, workdir)
        config = load_config(config_path)
        install = load_install()
        specs = specs_for(args.servers, config)
    except (OSError, ConfigError, LlamaCppError) as exc:
        print(f"eval: {exc}", file=sys.stderr)
        return 2
    print(f"eval: starting {len(specs)} llama-server(s), the router and Envoy (logs in {workdir})", file=sys.stderr)
    servers = []
    stack = None
    status = 1
    try:
        servers = start_servers(specs, install, log_dir=workdir, timeout=300)
        stack = Stack(
            config_path,
            listen_port=free_port(),
            grpc_port=free_port(),
            admin_port=free_port(),
            envoy_admin_port=free_port(),
            internal_port=free_port(),
            workdir=workdir,
            quiet=True,
            log_format="json",
        )
        stack.start(timeout=120)
        status = cli_main(["eval", *rest, "--endpoint", f"{stack.url}/v1"])
        return status
    except (LlamaCppError, RuntimeError) as exc:
        print(f"eval: the local stack did not start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        status = 130
        print("eval: interrupted", file=sys.stderr)
        return status
    finally:
        if stack is not None:
            stack.stop()
        stop_servers(servers)
        if args.keep_logs or status not in (0, 130):
            print(f"eval: logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
