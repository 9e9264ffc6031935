"""Compose one ONNX graph: MiniLM encoder → masked mean pooling + L2 → [embedding ⊕ wordpiece TF-IDF] → LR.

Everything after the encoder is plain ONNX ops (``TfIdfVectorizer`` counts the wordpiece n-grams
straight from ``input_ids``), so the result is a normal sequence-classification model directory:
input_ids / attention_mask / token_type_ids in, ``probabilities`` [batch, 2] out.

With ``sub_tokens`` set, the same linear head also scores every sub-window of the row (``sub_tokens``
positions, stride ``sub_stride``, the last one flush with the row's end; pooled from the encoder's
contextual states) and the output is the highest of the whole-row and sub-window scores, so a short
attack is not diluted by the rest of a long window (see ``subwindows``).
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
    sub_tokens: int = 0  # 0: score the whole row only
    sub_stride: int = 0
    max_tokens: int = 256  # longest row the encoder takes: fixes the number of sub-window slots


def _tfidf_logit(head: LinearHead, ids: str, tag: str) -> list[onnx.NodeProto]:
    """Nodes from 2-D ``ids`` (-1 = padding) to the TF-IDF block's logit ``P+z_t{tag}`` [rows, 1].

    sklearn's row is x = sublinear(tf) * idf, L2-normalised, so the logit is (s . (idf * w)) / |s * idf|
    with s = sublinear(tf) = min(tf, 1) + log(max(tf, 1)) (0 where tf = 0, else 1 + log tf). Written
    this way every op over the [rows, n-grams] tensor is a single pass: that tensor is the head's cost.
    """
    q = P + "tfidf" + tag + "/"  # names of its own: nothing else in the graph starts with this
    pool = list(head.unigrams) + [t for bg in head.bigrams for t in bg]
    return [
        helper.make_node(
            "TfIdfVectorizer",
            [ids],
            [q + "tf"],
            mode="TF",
            min_gram_length=1,
            max_gram_length=2,
            max_skip_count=0,
            ngram_counts=[0, len(head.unigrams)],
            ngram_indexes=list(head.unigram_index) + list(head.bigram_index),
            pool_int64s=pool,
        ),
        helper.make_node("Min", [q + "tf", P + "one"], [q + "tf_min1"]),
        helper.make_node("Max", [q + "tf", P + "one"], [q + "tf_max1"]),
        helper.make_node("Log", [q + "tf_max1"], [q + "logtf"]),
        helper.make_node("Add", [q + "tf_min1", q + "logtf"], [q + "sl"]),
        helper.make_node("MatMul", [q + "sl", P + "idf_w"], [q + "num"]),
        helper.make_node("Mul", [q + "sl", q + "sl"], [q + "s_sq"]),
        helper.make_node("MatMul", [q + "s_sq", P + "idf_sq"], [q + "x_ss"]),
        helper.make_node("Sqrt", [q + "x_ss"], [q + "x_n0"]),
        helper.make_node("Max", [q + "x_n0", P + "eps_norm"], [q + "x_n"]),
        helper.make_node("Div", [q + "num", q + "x_n"], [P + "z_t" + tag]),
    ]


def _sub_windows(head: LinearHead, hidden: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes computing ``P+z_sub`` [batch, slots]: the head's logit for every sub-window slot."""
    k, s = head.sub_tokens, head.sub_stride
    n_slots = -(-max(head.max_tokens - k, 0) // s) + 1
    inits = [
        numpy_helper.from_array(np.array([k], dtype=np.int64), P + "k"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), P + "zero_i"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), P + "one_i"),
        numpy_helper.from_array(np.array(0, dtype=np.int64), P + "zero_s"),
        numpy_helper.from_array(np.array(1, dtype=np.int64), P + "one_s"),
        numpy_helper.from_array((np.arange(n_slots, dtype=np.int64) * s).reshape(1, n_slots), P + "slots"),
        numpy_helper.from_array(np.arange(k, dtype=np.int64).reshape(1, 1, k), P + "arange_k"),
        numpy_helper.from_array(np.array([0, -1], dtype=np.int64), P + "shape_b_flat"),
        numpy_helper.from_array(np.array([0, -1, k], dtype=np.int64), P + "shape_b_slots_k"),
        numpy_helper.from_array(np.array([-1, k], dtype=np.int64), P + "shape_rows_k"),
        numpy_helper.from_array(np.array([-1, int(head.coef_emb.shape[0])], dtype=np.int64), P + "shape_rows_d"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), P + "minus1_1"),
        numpy_helper.from_array(np.array([n_slots], dtype=np.int64), P + "n_slots"),
        numpy_helper.from_array(np.array([s - 1], dtype=np.int64), P + "s_minus1"),
        numpy_helper.from_array(np.array([s], dtype=np.int64), P + "s"),
    ]
    n = helper.make_node
    nodes = [
        # Only as many slots as the batch's padded length T needs (a batch of short prompts: one),
        # so short prompts cost what they did before sub-windows.
        n("Shape", ["input_ids"], [P + "T1"], start=1, end=2),
        n("Shape", ["input_ids"], [P + "B1"], start=0, end=1),
        n("Sub", [P + "T1", P + "k"], [P + "Tk0"]),
        n("Max", [P + "Tk0", P + "zero_i"], [P + "Tk"]),
        n("Add", [P + "Tk", P + "s_minus1"], [P + "Tk_up"]),
        n("Div", [P + "Tk_up", P + "s"], [P + "n_need0"]),
        n("Add", [P + "n_need0", P + "one_i"], [P + "n_need"]),
        n("Min", [P + "n_need", P + "n_slots"], [P + "n_eff"]),
        n("Slice", [P + "slots", P + "zero_i", P + "n_eff", P + "one_i"], [P + "slots_eff"]),
        # Row lengths and the (clamped) start of every slot: [b, slots].
        n("Cast", ["attention_mask"], [P + "mask_i"], to=TensorProto.INT64),
        n("ReduceSum", [P + "mask_i", P + "axis1"], [P + "len"], keepdims=1),
        n("Sub", [P + "len", P + "k"], [P + "last0"]),
        n("Max", [P + "last0", P + "zero_i"], [P + "last"]),
        n("Min", [P + "slots_eff", P + "last"], [P + "starts"]),
        # Positions of every slot: [b, slots, k]; those past the row's end are padding.
        n("Unsqueeze", [P + "starts", P + "axis2"], [P + "starts3"]),
        n("Add", [P + "starts3", P + "arange_k"], [P + "pos"]),
        n("Unsqueeze", [P + "len", P + "axis2"], [P + "len3"]),
        n("Less", [P + "pos", P + "len3"], [P + "pos_ok"]),
        n("Sub", [P + "T1", P + "one_i"], [P + "Tm1"]),
        n("Min", [P + "pos", P + "Tm1"], [P + "pos_c"]),
        # The slots' ids, -1 outside the row, as [b * slots, k] rows for the n-gram counter.
        n("Reshape", [P + "pos_c", P + "shape_b_flat"], [P + "pos_flat"]),
        n("GatherElements", [P + "ids", P + "pos_flat"], [P + "sub_ids0"], axis=1),
        n("Reshape", [P + "sub_ids0", P + "shape_b_slots_k"], [P + "sub_ids1"]),
        n("Where", [P + "pos_ok", P + "sub_ids1", P + "minus1"], [P + "sub_ids2"]),
        n("Reshape", [P + "sub_ids2", P + "shape_rows_k"], [P + "sub_ids"]),
        # Slot membership [b, slots, T] → mean of the contextual token states, L2-normalised.
        n("Squeeze", [P + "T1", P + "zero_i"], [P + "T"]),
        n("Range", [P + "zero_s", P + "T", P + "one_s"], [P + "t"]),
        n("GreaterOrEqual", [P + "t", P + "starts3"], [P + "m_ge"]),
        n("Add", [P + "starts3", P + "k"], [P + "ends3"]),
        n("Less", [P + "t", P + "ends3"], [P + "m_lt"]),
        n("Less", [P + "t", P + "len3"], [P + "m_in"]),
        n("And", [P + "m_ge", P + "m_lt"], [P + "m_a"]),
        n("And", [P + "m_a", P + "m_in"], [P + "m_b"]),
        n("Cast", [P + "m_b"], [P + "m_f"], to=TensorProto.FLOAT),
        n("MatMul", [P + "m_f", hidden], [P + "s_sum"]),
        n("ReduceSum", [P + "m_f", P + "axis2"], [P + "s_cnt0"], keepdims=1),
        n("Max", [P + "s_cnt0", P + "eps_cnt"], [P + "s_cnt"]),
        n("Div", [P + "s_sum", P + "s_cnt"], [P + "s_mean"]),
        n("Mul", [P + "s_mean", P + "s_mean"], [P + "s_sq"]),
        n("ReduceSum", [P + "s_sq", P + "axis2"], [P + "s_ss"], keepdims=1),
        n("Sqrt", [P + "s_ss"], [P + "s_n0"]),
        n("Max", [P + "s_n0", P + "eps_norm"], [P + "s_n"]),
        n("Div", [P + "s_mean", P + "s_n"], [P + "s_emb3"]),
        n("Reshape", [P + "s_emb3", P + "shape_rows_d"], [P + "s_emb"]),
        n("MatMul", [P + "s_emb", P + "w_emb"], [P + "z_e_sub"]),
    ]
    nodes += _tfidf_logit(head, P + "sub_ids", "_sub")
    nodes += [
        n("Add", [P + "z_t_sub", P + "z_e_sub"], [P + "z_te_sub"]),
        n("Add", [P + "z_te_sub", P + "b"], [P + "z_sub_rows"]),
        n("Concat", [P + "B1", P + "minus1_1"], [P + "shape_b_slots"], axis=0),
        n("Reshape", [P + "z_sub_rows", P + "shape_b_slots"], [P + "z_sub"]),
    ]
    return nodes, inits


def compose(encoder: onnx.ModelProto, head: LinearHead, hidden_output: str = "last_hidden_state") -> onnx.ModelProto:
    g = encoder.graph
    n_feat = int(head.idf.shape[0])
    inits = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), P + "axis1"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), P + "axis2"),
        numpy_helper.from_array(np.array(1e-9, dtype=np.float32), P + "eps_cnt"),
        numpy_helper.from_array(np.array(1e-12, dtype=np.float32), P + "eps_norm"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), P + "one"),
        numpy_helper.from_array(np.array(-1, dtype=np.int64), P + "minus1"),
        numpy_helper.from_array(
            (head.idf.astype(np.float64) * head.coef_tfidf).astype(np.float32).reshape(n_feat, 1), P + "idf_w"
        ),
        numpy_helper.from_array((head.idf.astype(np.float64) ** 2).astype(np.float32).reshape(n_feat, 1), P + "idf_sq"),
        numpy_helper.from_array(head.coef_emb.astype(np.float32).reshape(-1, 1), P + "w_emb"),
        numpy_helper.from_array(np.array([head.intercept], dtype=np.float32), P + "b"),
    ]
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
    ]
    nodes += _tfidf_logit(head, P + "ids", "")
    nodes += [
        # Logistic regression over [tfidf ⊕ embedding].
        helper.make_node("MatMul", ["sentence_embedding", P + "w_emb"], [P + "z_e"]),
        helper.make_node("Add", [P + "z_t", P + "z_e"], [P + "z_te"]),
        helper.make_node("Add", [P + "z_te", P + "b"], [P + "z_whole"]),
    ]
    if head.sub_tokens:
        sub_nodes, sub_inits = _sub_windows(head, hidden_output)
        nodes += sub_nodes
        inits += sub_inits
        nodes += [
            helper.make_node("Concat", [P + "z_whole", P + "z_sub"], [P + "z_all"], axis=1),
            helper.make_node("ReduceMax", [P + "z_all"], [P + "z"], axes=[1], keepdims=1),
        ]
    else:
        nodes.append(helper.make_node("Identity", [P + "z_whole"], [P + "z"]))
    nodes += [
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


def export_head(head: LinearHead) -> bytes:
    """The same head as ``compose`` appends to the encoder, on its own (``head.npz``): what the router
    runs over its shared encoder pass (``classifiers.heads.TfidfLinearHead``). The coefficients are
    rounded to float32 exactly as ``compose`` rounds them, so both score the same."""
    from ..heads import TfidfLinearHead

    return TfidfLinearHead(
        "head",
        np.asarray(head.unigrams, dtype=np.int64),
        np.asarray(head.unigram_index, dtype=np.int64),
        np.asarray(head.bigrams, dtype=np.int64).reshape(-1, 2),
        np.asarray(head.bigram_index, dtype=np.int64),
        (head.idf.astype(np.float64) * head.coef_tfidf).astype(np.float32),
        (head.idf.astype(np.float64) ** 2).astype(np.float32),
        head.coef_emb.astype(np.float32),
        float(head.intercept),
        head.sub_tokens,
        head.sub_stride,
        head.max_tokens,
    ).to_bytes()
