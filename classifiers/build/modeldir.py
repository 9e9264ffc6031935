"""Writing model directories and checking whether one is already built and intact."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .fetch import sha256_file

BUILD_KEY = "build"  # metadata field: what the directory was built from (recipe version + inputs)


def build_key(recipe: str, *parts: str) -> str:
    return hashlib.sha256("\n".join((recipe, *parts)).encode()).hexdigest()[:16]


def is_current(model_dir: Path, key: str) -> bool:
    """True when ``metadata.json`` records ``key`` and every file it lists still has its sha256."""
    meta_path = model_dir / "metadata.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    files = meta.get("sha256") or {}
    if meta.get(BUILD_KEY) != key or "model.onnx" not in files:
        return False
    return all((model_dir / f).is_file() and sha256_file(model_dir / f) == h for f, h in files.items())


def write_model_dir(model_dir: Path, files: dict[str, bytes], metadata: dict[str, Any], key: str) -> dict[str, Any]:
    """Write ``files`` + ``metadata.json`` (with per-file sha256 and the build key) atomically-ish.

    metadata.json is written last, so an interrupted build never looks current.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "metadata.json").unlink(missing_ok=True)
    digests = {}
    for name, data in files.items():
        tmp = model_dir / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(model_dir / name)
        digests[name] = hashlib.sha256(data).hexdigest()
    meta = dict(metadata)
    meta["sha256"] = digests
    meta[BUILD_KEY] = key
    (model_dir / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta
