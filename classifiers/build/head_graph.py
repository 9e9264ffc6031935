"""Compose one ONNX graph: MiniLM encoder → masked mean pooling + L2 → [embedding ⊕ wordpiece TF-IDF] → LR.

Everything after the encoder is plain ONNX ops (``TfIdfVectorizer`` counts the wordpiece n-grams
straight from ``input_ids``), so the result is a normal sequence-classification model directory:
input_ids / attention_mask / token_type_ids in, ``probabilities`` [batch, 2] out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

P = "jb/"  # prefix for every name we add, so nothing collides with the encoder's names


@dataclass
class LinearHead:
    unigrams: list[int]  # wordpiece ids, in feature order
    bigrams: list[tuple[int, int]]
    unigram_index: list[int]  # output column of each unigram
    bigram_index: list[int]
    idf: np.ndarray  # [V]
    coef_tfidf: np.ndarray  # [V]
    coef_emb: np.ndarray  # [d] (already multiplied by the embedding weight used in training)
    intercept: float


def compose(encoder: onnx.ModelProto, head: LinearHead, hidden_output: str = "last_hidden_state") -> onnx.ModelProto:
    g = encoder.graph
    n_feat = int(head.idf.shape[0])
    inits = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), P + "axis1"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), P + "axis2"),
        numpy_helper.from_array(np.array(1e-9, dtype=np.float32), P + "eps_cnt"),
        numpy_helper.from_array(np.array(1e-12, dtype=np.float32), P + "eps_norm"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), P + "one"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), P + "zero"),
        numpy_helper.from_array(np.array(-1, dtype=np.int64), P + "minus1"),
        numpy_helper.from_array(head.idf.astype(np.float32), P + "idf"),
        numpy_helper.from_array(head.coef_tfidf.astype(np.float32).reshape(n_feat, 1), P + "w_tfidf"),
        numpy_helper.from_array(head.coef_emb.astype(np.float32).reshape(-1, 1), P + "w_emb"),
        numpy_helper.from_array(np.array([head.intercept], dtype=np.float32), P + "b"),
    ]
    pool = list(head.unigrams) + [t for bg in head.bigrams for t in bg]
    nodes = [
        # Masked mean pooling: padding positions contribute nothing, so batching can't change results.
        helper.make_node("Cast", ["attention_mask"], [P + "mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", [P + "mask_f", P + "axis2"], [P + "mask3"]),
        helper.make_node("Mul", [hidden_output, P + "mask3"], [P + "masked"]),
        helper.make_node("ReduceSum", [P + "masked", P + "axis1"], [P + "sum"], keepdims=0),
        helper.make_node("ReduceSum", [P + "mask3", P + "axis1"], [P + "cnt0"], keepdims=0),
        helper.make_node("Max", [P + "cnt0", P + "eps_cnt"], [P + "cnt"]),
        helper.make_node("Div", [P + "sum", P + "cnt"], [P + "mean"]),
        helper.make_node("Mul", [P + "mean", P + "mean"], [P + "mean_sq"]),
        helper.make_node("ReduceSum", [P + "mean_sq", P + "axis1"], [P + "mean_ss"], keepdims=1),
        helper.make_node("Sqrt", [P + "mean_ss"], [P + "mean_n0"]),
        helper.make_node("Max", [P + "mean_n0", P + "eps_norm"], [P + "mean_n"]),
        helper.make_node("Div", [P + "mean", P + "mean_n"], ["sentence_embedding"]),
        # Wordpiece uni+bigram counts; padding becomes -1, which matches no n-gram.
        helper.make_node("Cast", ["attention_mask"], [P + "mask_b"], to=TensorProto.BOOL),
        helper.make_node("Where", [P + "mask_b", "input_ids", P + "minus1"], [P + "ids"]),
        helper.make_node(
            "TfIdfVectorizer", [P + "ids"], [P + "tf"],
            mode="TF", min_gram_length=1, max_gram_length=2, max_skip_count=0,
            ngram_counts=[0, len(head.unigrams)],
            ngram_indexes=list(head.unigram_index) + list(head.bigram_index),
            pool_int64s=pool,
        ),
        # sklearn's sublinear_tf: 1 + log(tf) where tf > 0, then idf, then L2 norm per row.
        helper.make_node("Greater", [P + "tf", P + "zero"], [P + "present"]),
        helper.make_node("Max", [P + "tf", P + "one"], [P + "tf1"]),
        helper.make_node("Log", [P + "tf1"], [P + "logtf"]),
        helper.make_node("Add", [P + "logtf", P + "one"], [P + "sub0"]),
        helper.make_node("Where", [P + "present", P + "sub0", P + "zero"], [P + "sub"]),
        helper.make_node("Mul", [P + "sub", P + "idf"], [P + "x"]),
        helper.make_node("Mul", [P + "x", P + "x"], [P + "x_sq"]),
        helper.make_node("ReduceSum", [P + "x_sq", P + "axis1"], [P + "x_ss"], keepdims=1),
        helper.make_node("Sqrt", [P + "x_ss"], [P + "x_n0"]),
        helper.make_node("Max", [P + "x_n0", P + "eps_norm"], [P + "x_n"]),
        helper.make_node("Div", [P + "x", P + "x_n"], [P + "tfidf"]),
        # Logistic regression over [tfidf ⊕ embedding].
        helper.make_node("MatMul", [P + "tfidf", P + "w_tfidf"], [P + "z_t"]),
        helper.make_node("MatMul", ["sentence_embedding", P + "w_emb"], [P + "z_e"]),
        helper.make_node("Add", [P + "z_t", P + "z_e"], [P + "z_te"]),
        helper.make_node("Add", [P + "z_te", P + "b"], [P + "z"]),
        helper.make_node("Sigmoid", [P + "z"], [P + "p1"]),
        helper.make_node("Sub", [P + "one", P + "p1"], [P + "p0"]),
        helper.make_node("Concat", [P + "p0", P + "p1"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        list(g.node) + nodes,
        "minilm_tfidf_jailbreak",
        list(g.input),
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", int(head.coef_emb.shape[0])]),
        ],
        initializer=list(g.initializer) + inits,
        value_info=list(g.value_info),
    )
    model = helper.make_model(graph, opset_imports=list(encoder.opset_import), producer_name="fusion-router")
    model.ir_version = encoder.ir_version
    onnx.checker.check_model(model)
    return model
