"""Build ``models/nli``: a premise/hypothesis classifier (entailment / neutral / contradiction).

The encoder is the embedding model's all-MiniLM-L6-v2 (``models/embedding/model.onnx``); the pair
features are ONNX ops over its token states (``nli_graph``); the head is a small MLP trained here on
the corpus ``nli_corpus`` generates from pinned package data, selected on the validation split and
measured once on the held-out test split and on the hand-written ``nli_check.jsonl``. The result is
one ``model.onnx`` (kind ``pair``) that the router's micro-batcher serves like any other model.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import structlog

from .fetch import Pin, download, sha256_file
from .modeldir import build_key, is_current, write_model_dir
from .nli_corpus import LABELS, Pair, build_corpus, load_check_set, prose_documents
from .nli_graph import SCALARS, Mlp, compose, idf_vector, vocab_masks

log = structlog.get_logger(__name__)

SEED = 20261129
MAX_LENGTH = 256
HIDDEN = (64,)
ALPHAS = (1e-3, 1e-2)
CS = (0.3, 1.0, 3.0)
CHECK_SET = Path(__file__).resolve().parent / "nli_check.jsonl"
RECIPE = "nli/2"


def _session(model: onnx.ModelProto) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _run_pairs(session: Any, tokenizer: Any, pairs: list[tuple[str, str]], output: str, batch: int = 32) -> np.ndarray:
    """The graph's ``output`` for every pair, batched by similar length (padding never changes a row)."""
    encs = tokenizer.encode_batch(pairs)
    order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))
    rows: list[np.ndarray] = [np.zeros(0)] * len(encs)
    for k in range(0, len(order), batch):
        idx = order[k : k + batch]
        seq = max(len(encs[i].ids) for i in idx)
        ids = np.zeros((len(idx), seq), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for r, i in enumerate(idx):
            e = encs[i]
            ids[r, : len(e.ids)] = e.ids
            mask[r, : len(e.ids)] = e.attention_mask
            types[r, : len(e.ids)] = e.type_ids
        out = session.run([output], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
        for r, i in enumerate(idx):
            rows[i] = out[r]
    return np.stack(rows)


def per_class(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(y), "accuracy": round(float((y == pred).mean()), 4) if len(y) else None}
    for k, lab in enumerate(LABELS):
        sel = y == k
        chosen = pred == k
        recall = float((pred[sel] == k).mean()) if sel.any() else None
        precision = float((y[chosen] == k).mean()) if chosen.any() else None
        out[lab] = {
            "n": int(sel.sum()),
            "accuracy": None if recall is None else round(recall, 4),
            "precision": None if precision is None else round(precision, 4),
        }
    return out


def _labels(pairs: list[Pair]) -> np.ndarray:
    return np.array([LABELS.index(p.label) for p in pairs], dtype=np.int64)


def build_nli(
    out: Path, embedding_dir: Path, pins: dict[str, Pin], cache: Path, force: bool = False
) -> tuple[dict[str, Any], bool]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler
    from tokenizers import Tokenizer

    facts_pin, prose_pin = pins["nli_facts"], pins["nli_prose"]
    enc_path = embedding_dir / "model.onnx"
    check_hash = hashlib.sha256(CHECK_SET.read_bytes()).hexdigest()
    src_hash = hashlib.sha256(
        b"".join((Path(__file__).parent / f).read_bytes() for f in ("nli.py", "nli_corpus.py", "nli_graph.py"))
    ).hexdigest()
    key = build_key(RECIPE, facts_pin.sha256, prose_pin.sha256, sha256_file(enc_path), check_hash, src_hash)
    if not force and is_current(out, key):
        return json.loads((out / "metadata.json").read_text()), False
    t0 = time.perf_counter()
    dl = cache / "downloads"
    corpus = build_corpus(download(facts_pin, dl), download(prose_pin, dl), SEED)
    check = load_check_set(CHECK_SET)
    tok_json = (embedding_dir / "tokenizer.json").read_bytes()
    tokenizer = Tokenizer.from_str(tok_json.decode())
    tokenizer.no_padding()
    tokenizer.enable_truncation(MAX_LENGTH)
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    # Token rarity from the prose source (every MMLU question, not only the sentences used for pairs).
    docs = [e.ids for e in tokenizer.encode_batch(prose_documents(download(prose_pin, dl)))]
    masks = vocab_masks(vocab, idf_vector(max(vocab.values()) + 1, docs))
    encoder = onnx.load(str(enc_path))
    feature_graph = _session(compose(encoder, masks, None))
    feats = {
        name: _run_pairs(feature_graph, tokenizer, [(p.premise, p.hypothesis) for p in pairs], "features")
        for name, pairs in {**corpus, "check": check}.items()
    }
    t_feat = time.perf_counter() - t0
    ys = {name: _labels(pairs) for name, pairs in {**corpus, "check": check}.items()}
    scaler = StandardScaler().fit(feats["train"])
    xs = {k: scaler.transform(v) for k, v in feats.items()}
    grid = []
    best: tuple[float, Any, dict[str, Any]] | None = None
    candidates: list[dict[str, Any]] = [{"head": "mlp", "hidden": list(HIDDEN), "alpha": a} for a in ALPHAS]
    candidates += [{"head": "logistic", "C": c} for c in CS]
    for cand in candidates:
        t = time.perf_counter()
        if cand["head"] == "mlp":
            clf = MLPClassifier(
                hidden_layer_sizes=HIDDEN,
                alpha=cand["alpha"],
                max_iter=300,
                early_stopping=True,
                validation_fraction=0.1,
                n_iter_no_change=8,
                random_state=SEED,
            )
        else:
            clf = LogisticRegression(C=cand["C"], max_iter=3000)
        clf.fit(xs["train"], ys["train"])
        acc = float((clf.predict(xs["validation"]) == ys["validation"]).mean())
        grid.append({**cand, "validation_accuracy": round(acc, 4), "seconds": round(time.perf_counter() - t, 1)})
        if best is None or acc > best[0]:
            best = (acc, clf, cand)
    assert best is not None
    _, clf, chosen = best
    if chosen["head"] == "mlp":
        coefs, intercepts = list(clf.coefs_), list(clf.intercepts_)
    else:
        coefs, intercepts = [clf.coef_.T], [clf.intercept_]
    # Fold the standardisation into the first layer: (x - mean) / scale @ W + b.
    w0 = coefs[0] / scaler.scale_[:, None]
    b0 = intercepts[0] - (scaler.mean_ / scaler.scale_) @ coefs[0]
    head = Mlp([w0, *coefs[1:]], [b0, *intercepts[1:]])
    model = compose(encoder, masks, head)
    session = _session(model)
    metrics: dict[str, Any] = {}
    for name in ("validation", "test", "check"):
        pairs = corpus.get(name) or check
        probs = _run_pairs(session, tokenizer, [(p.premise, p.hypothesis) for p in pairs], "probabilities")
        pred = probs.argmax(axis=1)
        metrics[name] = per_class(ys[name], pred)
        if name == "test":
            for source in ("facts", "prose"):
                sel = np.array([p.source == source for p in pairs])
                metrics[f"test_{source}"] = per_class(ys[name][sel], pred[sel])
    # The graph must agree with the sklearn head it was folded from.
    sk = clf.predict_proba(xs["test"])
    onnx_p = _run_pairs(session, tokenizer, [(p.premise, p.hypothesis) for p in corpus["test"]], "probabilities")
    drift = float(np.abs(sk - onnx_p).max())
    if drift > 1e-3:
        raise RuntimeError(f"the ONNX head disagrees with the trained head by {drift:.2e}")
    import sklearn

    meta = {
        "kind": "pair",
        "labels": list(LABELS),
        "pooling": "none",
        "normalize": False,
        "max_length": MAX_LENGTH,
        "output": "probabilities",
        "output_type": "probabilities",
        "inputs": ["input_ids", "attention_mask", "token_type_ids"],
        "name": "MiniLM-L6 pair features (token alignment, exact/number/negation matches, slot swaps) + small head "
        "(natural language inference: entailment / neutral / contradiction)",
        "source": f"trained at build time on pairs generated from {facts_pin.name}=={facts_pin.version} (country facts, MIT) "
        f"and {prose_pin.name}=={prose_pin.version} (MMLU test-split questions, MIT); encoder all-MiniLM-L6-v2 "
        "int8 (Apache-2.0) from models/embedding",
        "license": "Apache-2.0 (encoder); head trained on text generated from MIT-licensed data (not redistributed)",
        "metrics": {
            "test_accuracy": metrics["test"]["accuracy"],
            "check_accuracy": metrics["check"]["accuracy"],
            **{f"test_{lab}_accuracy": metrics["test"][lab]["accuracy"] for lab in LABELS},
        },
        "evaluation": metrics,
        "training": {
            "features": f"{len(SCALARS)} pair features from the encoder's token states and the ids: {', '.join(SCALARS)}",
            "head": "the best on validation of an MLP (ReLU, adam, early stopping) and multinomial logistic regression; "
            "standardisation folded into the first layer",
            "selected": chosen,
            "grid": grid,
            "seed": SEED,
            "split": "by entity (country / MMLU question); the last sentence form of every fact relation appears only in test",
            "split_sizes": {k: len(v) for k, v in corpus.items()},
            # Countries whose facts the head never saw: evaluations on country facts use only these.
            "held_out_countries": sorted({p.group for p in corpus["test"] if p.source == "facts"}),
            "check_set": f"classifiers/build/nli_check.jsonl ({len(check)} hand-written pairs: tool results, answers, documents)",
            "sklearn": sklearn.__version__,
            "onnx": onnx.__version__,
            "feature_seconds": round(t_feat, 1),
            "seconds": round(time.perf_counter() - t0, 1),
        },
    }
    files = {"model.onnx": model.SerializeToString(), "tokenizer.json": tok_json}
    training: Any = meta["training"]
    log.info("nli_trained", test=metrics["test"]["accuracy"], check=metrics["check"]["accuracy"], seconds=training["seconds"])
    return write_model_dir(out, files, meta, key), True
