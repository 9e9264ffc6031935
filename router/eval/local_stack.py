"""``make eval``: start the local real-model stack, run ``fusion-router eval`` against it, stop it.

The stack is the one ``make run-llm`` runs - llama-server processes (built by ``make llm``) behind
the router and a real Envoy, on ``config/llm.yaml`` - but on free ports, so it does not collide with
a stack a developer already has up. Every process is started in its own session and stopped by PID.
Arguments this module does not know are passed to ``fusion-router eval``; the endpoint is this stack.

    python -m router.eval.local_stack --suite router/eval/data/suites/local-llm.yaml --limit 5 --out /tmp/e
"""

from __future__ import annotations

import argparse
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
    parser = argparse.ArgumentParser(prog="python -m router.eval.local_stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="router config (default config/llm.yaml)")
    parser.add_argument("--servers", type=Path, default=DEFAULT_SERVERS,
                        help="llama-server file (default config/llm-servers.yaml)")
    parser.add_argument("--keep-logs", action="store_true", help="print where the stack's logs are and keep them")
    args, rest = parser.parse_known_args(argv)

    from router.cli import main as cli_main
    from router.config import ConfigError, load_config
    from router.llamacpp import LlamaCppError, load_install, specs_for, start_servers, stop_servers
    from router.local import Stack, free_port

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
    try:
        servers = start_servers(specs, install, log_dir=workdir, timeout=300)
        stack = Stack(config_path, listen_port=free_port(), grpc_port=free_port(), admin_port=free_port(),
                      envoy_admin_port=free_port(), internal_port=free_port(), workdir=workdir, quiet=True,
                      log_format="json")
        stack.start(timeout=120)
        return cli_main(["eval", *rest, "--endpoint", f"{stack.url}/v1"])
    except (LlamaCppError, RuntimeError) as exc:
        print(f"eval: the local stack did not start: {exc}", file=sys.stderr)
        return 1
    finally:
        if stack is not None:
            stack.stop()
        stop_servers(servers)
        if args.keep_logs:
            print(f"eval: logs kept in {workdir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
