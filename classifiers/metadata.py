"""``metadata.json``: the small file that turns an ONNX export + ``tokenizer.json`` into a model dir.

Users who export their own fine-tuned model write the same file, so the fields are few and explicit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ModelLoadError

Kind = Literal["embedding", "sequence", "token", "pair"]
Pooling = Literal["mean", "cls", "none"]

METADATA_FILE = "metadata.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"

_KINDS = ("embedding", "sequence", "token", "pair")
_POOLINGS = ("mean", "cls", "none")
_DEFAULT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class ModelMetadata:
    kind: Kind
    labels: tuple[str, ...] = ()
    pooling: Pooling = "none"
    normalize: bool = False
    max_length: int = 512
    output: str | None = None  # ONNX output to read; None = the first output
    inputs: tuple[str, ...] = _DEFAULT_INPUTS
    # "probabilities" when the graph already ends in softmax; "logits" → softmax applied here.
    output_type: Literal["logits", "probabilities"] = "logits"
    # Token models only: overlap (in tokens) between windows when an input exceeds max_length.
    stride: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # metrics, source, license, sha256, ...

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path) -> ModelMetadata:
        kind = data.get("kind")
        if kind not in _KINDS:
            raise ModelLoadError(path, f"metadata 'kind' must be one of {_KINDS}, got {kind!r}")
        pooling = data.get("pooling", "mean" if kind == "embedding" else "none")
        if pooling not in _POOLINGS:
            raise ModelLoadError(path, f"metadata 'pooling' must be one of {_POOLINGS}, got {pooling!r}")
        labels = tuple(str(x) for x in data.get("labels", ()))
        if kind != "embedding" and not labels:
            raise ModelLoadError(path, f"metadata 'labels' is required for kind {kind!r}")
        max_length = int(data.get("max_length", 512))
        if max_length < 2:
            raise ModelLoadError(path, f"metadata 'max_length' must be >= 2, got {max_length}")
        output_type = data.get("output_type", "logits")
        if output_type not in ("logits", "probabilities"):
            raise ModelLoadError(path, f"metadata 'output_type' must be logits|probabilities, got {output_type!r}")
        known = {"kind", "labels", "pooling", "normalize", "max_length", "output", "inputs", "output_type", "stride"}
        return cls(
            kind=kind,
            labels=labels,
            pooling=pooling,
            normalize=bool(data.get("normalize", False)),
            max_length=max_length,
            output=data.get("output"),
            inputs=tuple(data.get("inputs", _DEFAULT_INPUTS)),
            output_type=output_type,
            stride=int(data.get("stride", 0)),
            extra={k: v for k, v in data.items() if k not in known},
        )

    @classmethod
    def load(cls, model_dir: Path) -> ModelMetadata:
        path = Path(model_dir) / METADATA_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelLoadError(path, "metadata.json is missing") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(path, f"metadata.json is unreadable: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelLoadError(path, "metadata.json must hold a JSON object")
        return cls.from_dict(data, path)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "labels": list(self.labels),
            "pooling": self.pooling,
            "normalize": self.normalize,
            "max_length": self.max_length,
            "output": self.output,
            "inputs": list(self.inputs),
            "output_type": self.output_type,
        }
        if self.stride:
            out["stride"] = self.stride
        out.update(self.extra)
        return out
