"""CLI: `python -m router.sim --backend name=a,port=8001,models=m1;m2 [--config FILE.yaml] [--ready-file PATH]`."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import orjson
from pydantic import ValidationError

from router.sim.backend import RunningBackend, start_backends, stop_backends
from router.sim.spec import SimBackendSpec, load_config, parse_backend_arg


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m router.sim", description=__doc__)
    parser.add_argument(
        "--backend",
        action="append",
        default=[],
        metavar="SPEC",
        help="name=N,port=P,models=m1;m2,latency_ms=..,tps=..,max_tokens=..,fail_rate=..,fail_status=..,"
        "mode=normal|error|hang|drop_midstream|broken_json_judge|judge_json,strict_models=true,seed=..",
    )
    parser.add_argument("--config", action="append", default=[], metavar="FILE.yaml", help="list of backend specs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ready-file", type=Path, help="write {host, backends: {name: {port, url}}} once listening")
    return parser


def _write_ready_file(path: Path, host: str, backends: list[RunningBackend]) -> None:
    payload = {"host": host, "backends": {b.name: {"port": b.port, "url": b.url} for b in backends}}
    # Write then rename so a poller never reads half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
    tmp.replace(path)


async def _serve(specs: list[SimBackendSpec], host: str, ready_file: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    backends = await start_backends(specs, host)
    try:
        for backend in backends:
            print(f"sim backend {backend.name} listening on {backend.url}", flush=True)
        if ready_file:
            _write_ready_file(ready_file, host, backends)
        await stop.wait()
    finally:
        await stop_backends(backends)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        specs = [s for path in args.config for s in load_config(path)]
        specs += [parse_backend_arg(text) for text in args.backend]
    except (OSError, ValueError, ValidationError) as exc:  # pydantic's ValidationError is a ValueError too
        parser.error(str(exc))
    if not specs:
        parser.error("give at least one --backend or --config")
    asyncio.run(_serve(specs, args.host, args.ready_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
