"""``python scripts/build_models.py --out models``: build every model directory, skip what is current."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from .fetch import BuildError, load_lock, sha256_file
from .recipes import build_embedding, build_embedding_fast, build_pii

log = structlog.get_logger(__name__)

# Only the jailbreak training needs these; installed on demand so a fresh CI machine just works.
TRAINING_DEPS = {"sklearn": "scikit-learn>=1.4,<2", "scipy": "scipy>=1.11", "onnx": "onnx>=1.16,<2"}
DEFAULT = ("embedding", "pii", "jailbreak", "nli")
OPTIONAL = ("embedding-fast",)


def ensure_training_deps(install: bool) -> None:
    missing = []
    for mod, req in TRAINING_DEPS.items():
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(req)
    if not missing:
        return
    if not install:
        raise BuildError(f"missing training dependencies {missing}; pip install them or drop --no-install")
    log.info("installing_training_deps", packages=missing)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", *missing], check=True)
    importlib.invalidate_caches()


def write_manifest(out: Path, built: dict[str, dict[str, Any]]) -> dict[str, Any]:
    import onnxruntime
    import tokenizers

    models = {}
    for name, meta in sorted(built.items()):
        d = out / name
        models[name] = {
            "path": name,
            "kind": meta["kind"],
            "name": meta.get("name"),
            "labels": len(meta.get("labels", [])),
            "max_length": meta["max_length"],
            "source": meta.get("source"),
            "license": meta.get("license"),
            "metrics": meta.get("metrics"),
            "files": {
                f.name: {"sha256": sha256_file(f), "bytes": f.stat().st_size}
                for f in sorted(d.iterdir())
                if f.is_file() and not f.name.startswith(".")
            },
        }
    manifest = {
        "built_by": "scripts/build_models.py",
        "lock": "classifiers/models.lock.json",
        "runtime": {"onnxruntime": onnxruntime.__version__, "tokenizers": tokenizers.__version__},
        "models": models,
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("models"))
    ap.add_argument("--cache", type=Path, default=Path(".cache/models"), help="downloads + feature cache")
    ap.add_argument("--only", nargs="*", choices=DEFAULT + OPTIONAL, help="build just these")
    ap.add_argument("--with-fast", action="store_true", help="also build embedding-fast (paraphrase-MiniLM-L3)")
    ap.add_argument("--force", action="store_true", help="rebuild even when current")
    ap.add_argument("--no-install", action="store_true", help="never pip-install training dependencies")
    args = ap.parse_args(argv)

    wanted = list(args.only or DEFAULT) + (["embedding-fast"] if args.with_fast and not args.only else [])
    out, dl = args.out, args.cache / "downloads"
    out.mkdir(parents=True, exist_ok=True)
    pins = load_lock()
    t0 = time.perf_counter()
    steps: dict[str, Callable[[], tuple[dict[str, Any], bool]]] = {
        "embedding": lambda: build_embedding(out / "embedding", pins, dl, args.force),
        "embedding-fast": lambda: build_embedding_fast(out / "embedding-fast", pins, dl, args.force),
        "pii": lambda: build_pii(out / "pii", pins, dl, args.force),
    }

    def jailbreak() -> tuple[dict[str, Any], bool]:
        ensure_training_deps(not args.no_install)
        from .jailbreak import build_jailbreak

        return build_jailbreak(out / "jailbreak", out / "embedding", pins, args.cache, args.force)

    steps["jailbreak"] = jailbreak

    def nli() -> tuple[dict[str, Any], bool]:
        ensure_training_deps(not args.no_install)
        from .nli import build_nli

        return build_nli(out / "nli", out / "embedding", pins, args.cache, args.force)

    steps["nli"] = nli
    if ("jailbreak" in wanted or "nli" in wanted) and "embedding" not in wanted:
        wanted.insert(0, "embedding")  # the jailbreak and NLI graphs are built on the embedding encoder
    try:
        for name in sorted(wanted, key=lambda n: list(steps).index(n)):
            t = time.perf_counter()
            _, rebuilt = steps[name]()
            log.info("model_built" if rebuilt else "model_current", model=name, seconds=round(time.perf_counter() - t, 1))
    except BuildError as exc:
        print(f"build_models: {exc}", file=sys.stderr)
        return 1
    # The manifest lists every model directory present, including ones built earlier.
    built = {}
    for d in sorted(p for p in out.iterdir() if (p / "metadata.json").is_file()):
        built[d.name] = json.loads((d / "metadata.json").read_text())
    write_manifest(out, built)
    log.info("models_ready", out=str(out), models=sorted(built), seconds=round(time.perf_counter() - t0, 1))
    return 0
