"""Score the shipped jailbreak head the way the router runs it (encoder pass + head.npz), with and
without sentence-start sub-windows, on the build's own evaluation sets: the s-labs test split, the
held-out conversation text (pip and click sources, held-out templates) with attacks hidden in it, and
the dev set's benign conversation windows (train sources; the set the 0.95 threshold was chosen on).

    .venv/bin/python bench/jailbreak_eval.py [--models models] [--cache .cache/models]

Needs the build's downloads (``make models`` leaves them in .cache/models/downloads). Prints one
Markdown table per set; docs/models.md records the result.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from classifiers.build import benign_corpus as bc
from classifiers.build import jailbreak as jb
from classifiers.build.fetch import load_lock
from classifiers.embedding import EmbeddingModel
from classifiers.metadata import ModelMetadata
from classifiers.shared import HeadSpec, SharedEncoder
from classifiers.windows import plain_tokenizer

THRESHOLDS = (0.85, 0.9, 0.95, 0.97)
Scorer = Callable[[Sequence[str]], dict[str, float]]


def scorer(models: Path, sentence_starts: bool) -> Scorer:
    spec = HeadSpec.of(models / "jailbreak", ModelMetadata.load(models / "jailbreak"))
    assert spec is not None, "models/jailbreak has no shared-encoder head"
    shared = SharedEncoder(EmbeddingModel(models / "embedding", device="cpu"))
    shared.add_head(spec.load_head("jailbreak", sentence_starts=sentence_starts))

    def score(texts: Sequence[str]) -> dict[str, float]:
        uniq = sorted(set(texts), key=len)
        out: dict[str, float] = {}
        for i in range(0, len(uniq), 64):
            chunk = uniq[i : i + 64]
            for t, f in zip(chunk, shared.run(chunk)):
                out[t] = float(f.values["jailbreak"][1])
        return out

    return score


def rate(flags: list[bool]) -> str:
    return f"{100 * float(np.mean(flags)):.2f} %" if flags else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--cache", type=Path, default=Path(".cache/models"))
    args = ap.parse_args()
    pins = load_lock()
    dl = args.cache / "downloads"
    corpus = jb.load_corpus(pins["jailbreak_corpus"], dl)
    enc = EmbeddingModel(args.models / "embedding", device="cpu")
    plain = plain_tokenizer(enc.tokenizer.tokenizer)
    cutter = bc.Cutter(plain)
    held = bc.Hosts("heldout", bc.load_family("heldout", pins, dl), cutter)
    train = bc.Hosts("train", bc.load_family("train", pins, dl), cutter)
    seen = {t.lower() for s in jb.SPLITS for t in corpus[s].texts}
    yanis = [t for t in bc.load_yanis(pins["jailbreak_corpus"], dl) if t.lower() not in seen]
    test_attacks = [t for t, y in zip(corpus["test"].texts, corpus["test"].y) if y == 1]
    evs = bc.eval_sets(held, plain, {"s-labs test": test_attacks, "yanismiraoui": yanis}, jb.SEED + 2)
    val = corpus["validation"]
    dev = bc.training_additions(
        train,
        [t for t, y in zip(val.texts, val.y) if y == 1],
        [t for t, y in zip(val.texts, val.y) if y == 0],
        jb.SEED + 1,
        n_benign=jb.DEV_BENIGN,
        n_pos=jb.DEV_POSITIVES,
        n_paired=jb.DEV_PAIRED,
    )
    dev_benign = [t for t, y, k in zip(dev.texts, dev.y, dev.kinds) if y == 0 and k != "paired"]
    dev_hidden = [t for t, y in zip(dev.texts, dev.y) if y == 1]
    # The fuzz corpus's placements: an attack at the end of 400 words of prose (train-family hosts).
    rng = random.Random(7)
    tails: list[list[str]] = []
    for a in rng.sample(test_attacks, 120):
        text, (lo, hi) = train.with_attack(rng, "prose", a, 300, 0)
        tails.append([w for w, ws, we in bc.router_windows(plain, text, 254) if we > lo and ws < hi])
    texts = evs.all_texts() + dev_benign + dev_hidden + corpus["test"].texts + [w for c in tails for w in c]
    print(f"scoring {len(set(texts))} texts twice", file=sys.stderr)
    size = 254
    rows: list[tuple[str, list[str]]] = []
    for label, on in (("grid sub-windows (model.onnx)", False), ("grid + sentence starts (router)", True)):
        s = scorer(args.models, on)(texts)
        y, p = corpus["test"].y, np.array([s[t] for t in corpus["test"].texts])
        cells = []
        for t in THRESHOLDS:
            fp_msgs = [max((s[w] for w in m), default=0.0) >= t for msgs in evs.benign[size].values() for m in msgs]
            rec = [max((s[w] for w in c), default=0.0) >= t for cases in evs.embedded[size].values() for c in cases]
            pred = p >= t
            prec = float((pred & (y == 1)).sum() / max(pred.sum(), 1))
            cells.append(
                f"{t}: test prec {prec:.4f} rec {float(pred[y == 1].mean()):.4f}; "
                f"held-out benign msgs flagged {rate(fp_msgs)}, hidden caught {rate(rec)}; "
                f"dev benign windows flagged {rate([s[w] >= t for w in dev_benign])}, dev hidden caught "
                f"{rate([s[w] >= t for w in dev_hidden])}; attack after 300 tokens of prose caught "
                f"{rate([max(s[w] for w in c) >= t for c in tails if c])}"
            )
        rows.append((label, cells))
    for label, cells in rows:
        print(f"\n### {label}\n")
        for c in cells:
            print(f"* {c}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
