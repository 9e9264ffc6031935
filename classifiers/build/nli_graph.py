"""One ONNX graph for premise/hypothesis pairs: MiniLM over ``[CLS] premise [SEP] hypothesis [SEP]`` →
pair features → a small MLP → ``probabilities`` [batch, 3] (entailment, neutral, contradiction).

The features are plain ONNX ops over the encoder's token states and the input ids, so training reads
them from the very graph that serves (no train/serve skew):

* cos(u, v) of the two segments' mean-pooled embeddings (the pooled vectors themselves are left out:
  a head reading them learned topic similarity and generalised worse to unseen wording);
* soft alignment: for every hypothesis content token, its best cosine match among the premise's
  tokens (mean, min, and the share below 0.5 / 0.7 / 0.85), and the premise's coverage by the hypothesis;
* exact matches: hypothesis content words, numbers and (the other way) premise numbers with no
  identical token on the other side;
* negation words on each side and their difference; segment lengths;
* slot swaps: a hypothesis word with no identical premise word that is close in context to a premise
  word with no identical hypothesis word ("Paris" → "Lyon"), plain and weighted by token rarity (IDF).

``token_type_ids`` tells the segments apart (0 premise, 1 hypothesis), as a BERT tokenizer writes
them for a pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

P = "nli/"
STOPWORDS = [
    "a",
    "an",
    "the",
    "of",
    "in",
    "on",
    "at",
    "to",
    "for",
    "from",
    "by",
    "with",
    "and",
    "or",
    "but",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "it",
    "its",
    "this",
    "that",
    "these",
    "those",
    "as",
    "has",
    "have",
    "had",
    "do",
    "does",
    "did",
    "will",
    "would",
    "can",
    "could",
    "should",
    "may",
    "might",
    "must",
    "there",
    "their",
    "they",
    "them",
    "he",
    "she",
    "his",
    "her",
    "we",
    "our",
    "you",
    "your",
    "i",
    "me",
    "my",
    "which",
    "who",
    "whom",
    "what",
    "when",
    "where",
    "how",
    "so",
    "than",
    "then",
    "also",
    "about",
    "into",
    "over",
    "such",
    "any",
    "all",
    "some",
    "each",
    "very",
    "just",
    "more",
    "most",
]
NEGATIONS = [
    "not",
    "no",
    "never",
    "none",
    "nobody",
    "nothing",
    "neither",
    "nor",
    "without",
    "cannot",
    "isn",
    "aren",
    "wasn",
    "weren",
    "doesn",
    "don",
    "didn",
    "won",
    "wouldn",
    "shouldn",
    "couldn",
    "hasn",
    "haven",
    "hadn",
]
SCALARS = (
    "cos",
    "align_mean_h",
    "align_min_h",
    "low50_h",
    "low70_h",
    "low85_h",
    "align_mean_p",
    "unmatched_h",
    "frac_unmatched_h",
    "num_unmatched_h",
    "num_unmatched_p",
    "num_h",
    "num_p",
    "neg_p",
    "neg_h",
    "neg_diff",
    "len_p",
    "len_h",
    "frac_unmatched_p",
    "swap_max",
    "swap_mean",
    "idf_unmatched_h",
    "idf_unmatched_p",
    "idf_frac_unmatched_h",
    "idf_frac_unmatched_p",
    "idf_max_unmatched_h",
    "idf_max_unmatched_p",
    "swap_idf",
)


@dataclass
class Mlp:
    """Standardisation folded into the first layer; ReLU between layers; softmax at the end."""

    weights: list[np.ndarray]  # [in, out] per layer
    biases: list[np.ndarray]
    labels: tuple[str, ...] = ("entailment", "neutral", "contradiction")
    meta: dict[str, object] = field(default_factory=dict)


def idf_vector(size: int, docs: list[list[int]]) -> np.ndarray:
    """Smoothed inverse document frequency of every token id, scaled to [0, 1]."""
    df = np.zeros(size, dtype=np.float64)
    for ids in docs:
        df[np.unique(np.asarray(ids, dtype=np.int64))] += 1
    idf = np.log((len(docs) + 1) / (df + 1)) + 1
    out: np.ndarray = (idf / idf.max()).astype(np.float32)
    return out


def vocab_masks(vocab: dict[str, int], idf: np.ndarray | None = None) -> dict[str, np.ndarray]:
    size = max(vocab.values()) + 1
    stop, num, neg, special = (np.zeros(size, dtype=np.float32) for _ in range(4))
    for tok, i in vocab.items():
        bare = tok[2:] if tok.startswith("##") else tok
        if tok in STOPWORDS or (len(bare) == 1 and not bare.isalnum()):
            stop[i] = 1.0  # function words and punctuation: not content
        if bare.isdigit():
            num[i] = 1.0
        if tok in NEGATIONS:
            neg[i] = 1.0
        if tok in ("[CLS]", "[SEP]", "[PAD]"):
            special[i] = 1.0
    return {
        "stop": stop,
        "num": num,
        "neg": neg,
        "special": special,
        "idf": idf if idf is not None else np.ones(size, dtype=np.float32),
    }


def _c(name: str, value: np.ndarray | float | list[int], dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), P + name)


def _masked_mean(n: list[onnx.NodeProto], hidden: str, mask: str, out: str) -> None:
    n += [
        helper.make_node("Unsqueeze", [P + mask, P + "ax2"], [P + mask + "3"]),
        helper.make_node("Mul", [hidden, P + mask + "3"], [P + out + "_m"]),
        helper.make_node("ReduceSum", [P + out + "_m", P + "ax1"], [P + out + "_s"], keepdims=0),
        helper.make_node("ReduceSum", [P + mask, P + "ax1"], [P + out + "_c0"], keepdims=1),
        helper.make_node("Max", [P + out + "_c0", P + "eps"], [P + out + "_c"]),
        helper.make_node("Div", [P + out + "_s", P + out + "_c"], [P + out + "_raw"]),
        helper.make_node("Mul", [P + out + "_raw", P + out + "_raw"], [P + out + "_sq"]),
        helper.make_node("ReduceSum", [P + out + "_sq", P + "ax1"], [P + out + "_ss"], keepdims=1),
        helper.make_node("Sqrt", [P + out + "_ss"], [P + out + "_n0"]),
        helper.make_node("Max", [P + out + "_n0", P + "eps"], [P + out + "_n"]),
        helper.make_node("Div", [P + out + "_raw", P + out + "_n"], [P + out]),
    ]


def _seg_sum(n: list[onnx.NodeProto], x: str, mask: str, out: str) -> None:
    """[b, 1]: sum over positions of x * mask."""
    n += [
        helper.make_node("Mul", [P + x, P + mask], [P + out + "_xm"]),
        helper.make_node("ReduceSum", [P + out + "_xm", P + "ax1"], [P + out], keepdims=1),
    ]


def _seg_mean(n: list[onnx.NodeProto], x: str, mask: str, out: str) -> None:
    _seg_sum(n, x, mask, out + "_sum")
    n += [
        helper.make_node("ReduceSum", [P + mask, P + "ax1"], [P + out + "_cnt0"], keepdims=1),
        helper.make_node("Max", [P + out + "_cnt0", P + "one"], [P + out + "_cnt"]),
        helper.make_node("Div", [P + out + "_sum", P + out + "_cnt"], [P + out]),
    ]


def feature_nodes(hidden: str, masks: dict[str, np.ndarray]) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """Nodes from the encoder's ``hidden`` [b, s, d] and the inputs to ``P+features`` [b, F]."""
    inits = [
        _c("ax1", [1], np.int64),
        _c("ax2", [2], np.int64),
        _c("eps", 1e-9),
        _c("one", 1.0),
        _c("zero", 0.0),
        _c("four", 4.0),
        _c("len_scale", 1 / 64),
        _c("t50", 0.5),
        _c("t70", 0.7),
        _c("t85", 0.85),
        _c("stop", masks["stop"]),
        _c("num", masks["num"]),
        _c("neg", masks["neg"]),
        _c("special", masks["special"]),
        _c("idf", masks["idf"]),
    ]
    n: list[onnx.NodeProto] = [
        helper.make_node("Cast", ["attention_mask"], [P + "m"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["token_type_ids"], [P + "t"], to=TensorProto.FLOAT),
        helper.make_node("Gather", [P + "special", "input_ids"], [P + "sp"], axis=0),
        helper.make_node("Gather", [P + "stop", "input_ids"], [P + "st"], axis=0),
        helper.make_node("Gather", [P + "num", "input_ids"], [P + "nm"], axis=0),
        helper.make_node("Gather", [P + "neg", "input_ids"], [P + "ng"], axis=0),
        helper.make_node("Sub", [P + "one", P + "sp"], [P + "nsp"]),
        helper.make_node("Mul", [P + "m", P + "nsp"], [P + "real"]),
        helper.make_node("Mul", [P + "real", P + "t"], [P + "hmask"]),
        helper.make_node("Sub", [P + "real", P + "hmask"], [P + "pmask"]),
        helper.make_node("Sub", [P + "one", P + "st"], [P + "content"]),
        helper.make_node("Mul", [P + "hmask", P + "content"], [P + "hc"]),
        helper.make_node("Mul", [P + "pmask", P + "content"], [P + "pc"]),
    ]
    _masked_mean(n, hidden, "pmask", "u")
    _masked_mean(n, hidden, "hmask", "v")
    n += [
        helper.make_node("Mul", [P + "u", P + "v"], [P + "uv_mul"]),
        helper.make_node("ReduceSum", [P + "uv_mul", P + "ax1"], [P + "cos"], keepdims=1),
        # Token states, L2-normalised: S[i, j] is the cosine of token i with token j.
        helper.make_node("Mul", [hidden, hidden], [P + "h_sq"]),
        helper.make_node("ReduceSum", [P + "h_sq", P + "ax2"], [P + "h_ss"], keepdims=1),
        helper.make_node("Sqrt", [P + "h_ss"], [P + "h_n0"]),
        helper.make_node("Max", [P + "h_n0", P + "eps"], [P + "h_n"]),
        helper.make_node("Div", [hidden, P + "h_n"], [P + "hn"]),
        helper.make_node("Transpose", [P + "hn"], [P + "hnT"], perm=[0, 2, 1]),
        helper.make_node("MatMul", [P + "hn", P + "hnT"], [P + "S"]),
        # Columns outside the other segment get -4 (below any cosine) before the max.
        helper.make_node("Unsqueeze", [P + "pmask", P + "ax1"], [P + "pcol"]),
        helper.make_node("Sub", [P + "pcol", P + "one"], [P + "pcol_off"]),
        helper.make_node("Mul", [P + "pcol_off", P + "four"], [P + "pcol_pen"]),
        helper.make_node("Add", [P + "S", P + "pcol_pen"], [P + "S_p"]),
        helper.make_node("ReduceMax", [P + "S_p"], [P + "a_h"], axes=[2], keepdims=0),
        helper.make_node("Unsqueeze", [P + "hmask", P + "ax1"], [P + "hcol"]),
        helper.make_node("Sub", [P + "hcol", P + "one"], [P + "hcol_off"]),
        helper.make_node("Mul", [P + "hcol_off", P + "four"], [P + "hcol_pen"]),
        helper.make_node("Add", [P + "S", P + "hcol_pen"], [P + "S_h"]),
        helper.make_node("ReduceMax", [P + "S_h"], [P + "a_p"], axes=[2], keepdims=0),
    ]
    _seg_mean(n, "a_h", "hc", "align_mean_h")
    _seg_mean(n, "a_p", "pc", "align_mean_p")
    n += [
        helper.make_node("Sub", [P + "one", P + "hc"], [P + "not_hc"]),
        helper.make_node("Mul", [P + "not_hc", P + "four"], [P + "not_hc4"]),
        helper.make_node("Add", [P + "a_h", P + "not_hc4"], [P + "a_h_off"]),
        helper.make_node("ReduceMin", [P + "a_h_off"], [P + "align_min0"], axes=[1], keepdims=1),
        helper.make_node("Min", [P + "align_min0", P + "one"], [P + "align_min_h"]),
    ]
    for t in ("50", "70", "85"):
        n += [
            helper.make_node("Less", [P + "a_h", P + "t" + t], [P + "lt" + t]),
            helper.make_node("Cast", [P + "lt" + t], [P + "ltf" + t], to=TensorProto.FLOAT),
        ]
        _seg_mean(n, "ltf" + t, "hc", "low" + t + "_h")
    # Exact token matches across the segments.
    n += [
        helper.make_node("Unsqueeze", ["input_ids", P + "ax2"], [P + "ids_r"]),
        helper.make_node("Unsqueeze", ["input_ids", P + "ax1"], [P + "ids_c"]),
        helper.make_node("Equal", [P + "ids_r", P + "ids_c"], [P + "eq"]),
        helper.make_node("Cast", [P + "eq"], [P + "eqf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [P + "eqf", P + "pcol"], [P + "eq_p"]),
        helper.make_node("ReduceMax", [P + "eq_p"], [P + "x_h"], axes=[2], keepdims=0),
        helper.make_node("Mul", [P + "eqf", P + "hcol"], [P + "eq_h"]),
        helper.make_node("ReduceMax", [P + "eq_h"], [P + "x_p"], axes=[2], keepdims=0),
        helper.make_node("Sub", [P + "one", P + "x_h"], [P + "nx_h"]),
        helper.make_node("Sub", [P + "one", P + "x_p"], [P + "nx_p"]),
        helper.make_node("Mul", [P + "hmask", P + "nm"], [P + "hnum"]),
        helper.make_node("Mul", [P + "pmask", P + "nm"], [P + "pnum"]),
    ]
    _seg_sum(n, "nx_h", "hc", "unmatched_h")
    _seg_mean(n, "nx_h", "hc", "frac_unmatched_h")
    _seg_sum(n, "nx_h", "hnum", "num_unmatched_h")
    _seg_sum(n, "nx_p", "pnum", "num_unmatched_p")
    # Slot swaps ("Paris" -> "Lyon"): a hypothesis content token with no identical token in the premise,
    # similar in context to a premise content token that has no identical token in the hypothesis.
    _seg_mean(n, "nx_p", "pc", "frac_unmatched_p")
    n += [
        helper.make_node("Mul", [P + "nx_p", P + "pc"], [P + "p_left"]),
        helper.make_node("Mul", [P + "nx_h", P + "hc"], [P + "h_left"]),
        helper.make_node("Unsqueeze", [P + "p_left", P + "ax1"], [P + "pleft_col"]),
        helper.make_node("Sub", [P + "pleft_col", P + "one"], [P + "pleft_off"]),
        helper.make_node("Mul", [P + "pleft_off", P + "four"], [P + "pleft_pen"]),
        helper.make_node("Add", [P + "S", P + "pleft_pen"], [P + "S_swap"]),
        helper.make_node("ReduceMax", [P + "S_swap"], [P + "swap_tok"], axes=[2], keepdims=0),
        helper.make_node("Max", [P + "swap_tok", P + "zero"], [P + "swap_pos"]),
        helper.make_node("Mul", [P + "swap_pos", P + "h_left"], [P + "swap_h"]),
        helper.make_node("ReduceMax", [P + "swap_h"], [P + "swap_max"], axes=[1], keepdims=1),
    ]
    _seg_mean(n, "swap_pos", "h_left", "swap_mean")
    # The same, weighted by how rare a token is (IDF over the prose corpus): a swapped name or number
    # weighs more than a swapped function-like word such as "city".
    n += [
        helper.make_node("Gather", [P + "idf", "input_ids"], [P + "tok_idf"], axis=0),
        helper.make_node("Mul", [P + "tok_idf", P + "h_left"], [P + "idf_hleft"]),
        helper.make_node("Mul", [P + "tok_idf", P + "p_left"], [P + "idf_pleft"]),
        helper.make_node("Mul", [P + "tok_idf", P + "hc"], [P + "idf_hc"]),
        helper.make_node("Mul", [P + "tok_idf", P + "pc"], [P + "idf_pc"]),
        helper.make_node("ReduceSum", [P + "idf_hleft", P + "ax1"], [P + "idf_unmatched_h"], keepdims=1),
        helper.make_node("ReduceSum", [P + "idf_pleft", P + "ax1"], [P + "idf_unmatched_p"], keepdims=1),
        helper.make_node("ReduceSum", [P + "idf_hc", P + "ax1"], [P + "idf_hc_sum0"], keepdims=1),
        helper.make_node("ReduceSum", [P + "idf_pc", P + "ax1"], [P + "idf_pc_sum0"], keepdims=1),
        helper.make_node("Max", [P + "idf_hc_sum0", P + "eps"], [P + "idf_hc_sum"]),
        helper.make_node("Max", [P + "idf_pc_sum0", P + "eps"], [P + "idf_pc_sum"]),
        helper.make_node("Div", [P + "idf_unmatched_h", P + "idf_hc_sum"], [P + "idf_frac_unmatched_h"]),
        helper.make_node("Div", [P + "idf_unmatched_p", P + "idf_pc_sum"], [P + "idf_frac_unmatched_p"]),
        helper.make_node("ReduceMax", [P + "idf_hleft"], [P + "idf_max_unmatched_h"], axes=[1], keepdims=1),
        helper.make_node("ReduceMax", [P + "idf_pleft"], [P + "idf_max_unmatched_p"], axes=[1], keepdims=1),
        helper.make_node("Mul", [P + "swap_h", P + "tok_idf"], [P + "swap_idf_tok"]),
        helper.make_node("ReduceMax", [P + "swap_idf_tok"], [P + "swap_idf"], axes=[1], keepdims=1),
    ]
    n += [
        helper.make_node("ReduceSum", [P + "hnum", P + "ax1"], [P + "num_h"], keepdims=1),
        helper.make_node("ReduceSum", [P + "pnum", P + "ax1"], [P + "num_p"], keepdims=1),
    ]
    _seg_sum(n, "ng", "pmask", "neg_p")
    _seg_sum(n, "ng", "hmask", "neg_h")
    n += [
        helper.make_node("Sub", [P + "neg_p", P + "neg_h"], [P + "neg_d"]),
        helper.make_node("Abs", [P + "neg_d"], [P + "neg_diff"]),
        helper.make_node("ReduceSum", [P + "pmask", P + "ax1"], [P + "len_p0"], keepdims=1),
        helper.make_node("Mul", [P + "len_p0", P + "len_scale"], [P + "len_p"]),
        helper.make_node("ReduceSum", [P + "hmask", P + "ax1"], [P + "len_h0"], keepdims=1),
        helper.make_node("Mul", [P + "len_h0", P + "len_scale"], [P + "len_h"]),
        helper.make_node("Concat", [P + s for s in SCALARS], [P + "scalars"], axis=1),
        helper.make_node("Identity", [P + "scalars"], [P + "features"]),
    ]
    return n, inits, P + "features"


def _encoder_parts(encoder: onnx.ModelProto, segment_types: bool) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto]]:
    """The encoder's nodes; without ``segment_types`` it sees type 0 everywhere (as in its training)."""
    nodes = list(encoder.graph.node)
    if segment_types:
        return nodes, []
    zero = [helper.make_node("Mul", ["token_type_ids", P + "zero_i"], [P + "enc_types"])]
    for node in nodes:
        for k, name in enumerate(node.input):
            if name == "token_type_ids":
                node.input[k] = P + "enc_types"
    return nodes, zero


def compose(
    encoder: onnx.ModelProto,
    masks: dict[str, np.ndarray],
    head: Mlp | None,
    *,
    segment_types: bool = False,
    hidden_output: str = "last_hidden_state",
) -> onnx.ModelProto:
    """``head`` None: the graph outputs ``features`` (for training); else ``probabilities``."""
    encoder = onnx.ModelProto.FromString(encoder.SerializeToString())  # never edit the caller's copy
    g = encoder.graph
    enc_nodes, pre = _encoder_parts(encoder, segment_types)
    feats, inits, fname = feature_nodes(hidden_output, masks)
    inits.append(_c("zero_i", 0, np.int64))
    nodes = pre + enc_nodes + feats
    outputs = []
    if head is None:
        nodes.append(helper.make_node("Identity", [fname], ["features"]))
        outputs.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", "features"]))
    else:
        x = fname
        for k, (w, b) in enumerate(zip(head.weights, head.biases, strict=True)):
            inits += [_c(f"w{k}", w.astype(np.float32)), _c(f"b{k}", b.astype(np.float32))]
            nodes += [
                helper.make_node("MatMul", [x, P + f"w{k}"], [P + f"z{k}m"]),
                helper.make_node("Add", [P + f"z{k}m", P + f"b{k}"], [P + f"z{k}"]),
            ]
            x = P + f"z{k}"
            if k < len(head.weights) - 1:
                nodes.append(helper.make_node("Relu", [x], [P + f"r{k}"]))
                x = P + f"r{k}"
        nodes.append(helper.make_node("Softmax", [x], ["probabilities"], axis=-1))
        outputs.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", len(head.labels)]))
    graph = helper.make_graph(
        nodes, "minilm_pair_nli", list(g.input), outputs, initializer=list(g.initializer) + inits, value_info=list(g.value_info)
    )
    model = helper.make_model(graph, opset_imports=list(encoder.opset_import), producer_name="fusion-router")
    model.ir_version = encoder.ir_version
    onnx.checker.check_model(model)
    return model
