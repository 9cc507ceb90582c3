#!/usr/bin/env python3.11
"""Convert a standard Hugging Face BERT-family encoder directory into Verbatim's encoder package.

    models/cache/venv/bin/python models/convert_hf.py SRC_DIR OUT_DIR [options]

SRC_DIR holds `config.json` (model_type "bert"), `model.safetensors` (F32, F16 or BF16; tensor
names with or without a `bert.` prefix) and `tokenizer.json`, e.g. sentence-transformers'
all-MiniLM-L6-v2 (prepare.py extracts it to models/cache/all-minilm-l6-v2/). OUT_DIR gets:

  model.onnx       fp32 graph, opset 17 + com.microsoft (ONNX Runtime CPU kernels), with exactly
                   the interface of e5-small/model.onnx:
                     inputs   input_ids       int64 [batch, seq]  [CLS] ... [SEP], right-padded
                              attention_mask  int64 [batch, seq]  1 for real tokens incl. [CLS]/[SEP]
                     outputs  embedding       float32 [batch, hidden]  masked mean, L2-normalised
                              pooled          float32 [batch, hidden]  the masked mean itself
                   token type 0 is folded in (no token_type_ids input); position ids are
                   cumsum(attention_mask) - 1, i.e. 0..n-1 for a right-padded row like BERT's
                   arange, and left padding works too; GELU as config.hidden_act says.
  tokenizer.json   the source tokenizer.json with `padding` and `truncation` set to null
  model_info.json  the keys of e5-small/model_info.json (+ "expand_unknown_runs": false)

Only the standard library, numpy and onnx are needed. safetensors is parsed here directly: 8-byte
little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw
little-endian data (offsets relative to the end of the header).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np

MS = "com.microsoft"
SAFETENSORS_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
# config.hidden_act -> how the graph computes it (HF ACT2FN names)
ACTIVATIONS = {"gelu": "erf", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh",
               "gelu_fast": "tanh", "relu": "relu"}


class ConvertError(Exception):
    pass


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------
def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """(header without __metadata__, byte offset of the data section)."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ConvertError(f"{path}: too short for a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        size = os.fstat(fh.fileno()).st_size
        if n > min(size - 8, 100 << 20):
            raise ConvertError(f"{path}: header length {n} does not fit the file ({size} B)")
        try:
            header = json.loads(fh.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConvertError(f"{path}: bad safetensors header: {err}") from None
    if not isinstance(header, dict):
        raise ConvertError(f"{path}: safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    data_start, data_len = 8 + n, size - 8 - n
    for name, entry in header.items():
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in SAFETENSORS_DTYPES:
            raise ConvertError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(SAFETENSORS_DTYPES[dtype]).itemsize
        if not (0 <= begin <= end <= data_len) or end - begin != nbytes:
            raise ConvertError(f"{path}: tensor {name} ({dtype} {shape}) has data_offsets "
                               f"[{begin}, {end}] that do not match its size or the file")
    return header, data_start


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors; floating-point ones as float32 (F16/BF16 widen exactly), others as stored."""
    header, data_start = read_safetensors_header(path)
    tensors: dict[str, np.ndarray] = {}
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for name, entry in header.items():
            dtype, shape = entry["dtype"], entry["shape"]
            begin, end = entry["data_offsets"]
            count = int(np.prod(shape, dtype=np.int64))
            raw = np.frombuffer(mm, SAFETENSORS_DTYPES[dtype], count, data_start + begin)
            if dtype == "BF16":
                arr = (raw.astype(np.uint32) << 16).view(np.float32)
            elif dtype in FLOAT_DTYPES:
                arr = raw.astype(np.float32)
            else:
                arr = raw.copy()
            tensors[name] = arr.reshape(shape)
            del raw
    return tensors


# --------------------------------------------------------------------------------------------
# config, weights
# --------------------------------------------------------------------------------------------
def load_config(src: Path) -> dict:
    try:
        cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConvertError(f"{src}/config.json not found") from None
    model_type = cfg.get("model_type", "bert")
    if model_type != "bert":
        raise ConvertError(f"config.json: model_type {model_type!r} is not supported (only "
                           f"'bert': RoBERTa/XLM-R offset their positions, DistilBERT names its "
                           f"weights differently)")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ConvertError(f"config.json: position_embedding_type "
                           f"{cfg['position_embedding_type']!r} is not supported (only 'absolute')")
    act = cfg.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise ConvertError(f"config.json: hidden_act {act!r} is not supported "
                           f"({', '.join(ACTIVATIONS)})")
    if cfg.get("is_decoder") or cfg.get("add_cross_attention"):
        raise ConvertError("config.json: decoder / cross-attention BERT models are not supported")
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings"):
        if not isinstance(cfg.get(key), int) or cfg[key] <= 0:
            raise ConvertError(f"config.json: {key} missing or not a positive integer")
    if cfg["hidden_size"] % cfg["num_attention_heads"]:
        raise ConvertError("config.json: hidden_size is not a multiple of num_attention_heads")
    return cfg


def check_pooling(src: Path) -> None:
    """sentence-transformers' 1_Pooling/config.json, when there, must ask for mean pooling."""
    for path in sorted(src.glob("*Pooling*/config.json")):
        pool = json.loads(path.read_text(encoding="utf-8"))
        modes = sorted(k for k, v in pool.items() if k.startswith("pooling_mode") and v is True)
        if modes != ["pooling_mode_mean_tokens"]:
            raise ConvertError(f"{path}: the model is meant to be pooled with {modes or 'none'}; "
                               f"the graph always mean-pools (pass --allow-other-pooling to "
                               f"convert it anyway)")


class Weights:
    """The encoder's tensors, found with or without a prefix such as `bert.`."""

    SUFFIX = "embeddings.word_embeddings.weight"

    def __init__(self, tensors: dict[str, np.ndarray], cfg: dict) -> None:
        prefixes = sorted(k[: -len(self.SUFFIX)] for k in tensors if k.endswith(self.SUFFIX))
        if not prefixes:
            raise ConvertError(f"model.safetensors has no *{self.SUFFIX} tensor")
        if "" in prefixes:
            self.prefix = ""
        elif "bert." in prefixes:
            self.prefix = "bert."
        elif len(prefixes) == 1:
            self.prefix = prefixes[0]
        else:
            raise ConvertError(f"model.safetensors has several encoders: prefixes {prefixes}")
        self.tensors, self.cfg = tensors, cfg

    def has(self, name: str) -> bool:
        return self.prefix + name in self.tensors

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        full = self.prefix + name
        if full not in self.tensors:
            raise ConvertError(f"model.safetensors has no tensor {full}")
        t = self.tensors[full]
        if t.dtype != np.float32:
            raise ConvertError(f"tensor {full}: expected a floating-point dtype, got {t.dtype}")
        if tuple(t.shape) != tuple(shape):
            raise ConvertError(f"tensor {full}: shape {list(t.shape)}, config.json implies "
                               f"{list(shape)}")
        return t


# --------------------------------------------------------------------------------------------
# tokenizer.json, model_info.json
# --------------------------------------------------------------------------------------------
SPECIALS = {"bos_id": "[CLS]", "eos_id": "[SEP]", "pad_id": "[PAD]", "unk_id": "[UNK]"}


def load_tokenizer_json(src: Path) -> dict:
    try:
        tok = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConvertError(f"{src}/tokenizer.json not found") from None
    tok["padding"] = None
    tok["truncation"] = None
    return tok


def special_ids(tok: dict) -> dict[str, int]:
    """[CLS]/[SEP]/[PAD]/[UNK] ids from the vocabulary (added_tokens take precedence)."""
    vocab = dict(tok.get("model", {}).get("vocab") or {})
    if not isinstance(vocab, dict):
        raise ConvertError("tokenizer.json: model.vocab is not a token -> id map (not WordPiece?)")
    for added in tok.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    ids = {}
    for key, token in SPECIALS.items():
        if token not in vocab:
            raise ConvertError(f"tokenizer.json: no {token} token in the vocabulary")
        ids[key] = int(vocab[token])
    unk_token = tok.get("model", {}).get("unk_token")
    if unk_token is not None and vocab.get(unk_token) != ids["unk_id"]:
        raise ConvertError(f"tokenizer.json: model.unk_token is {unk_token!r}, not [UNK]")
    return ids


def model_info(src: Path, cfg: dict, tok: dict, vocab_rows: int, source_sha256: str,
               max_positions: int, query_prefix: str, passage_prefix: str) -> dict:
    ids = special_ids(tok)
    too_big = {k: v for k, v in ids.items() if not 0 <= v < vocab_rows}
    if too_big:
        raise ConvertError(f"special token ids {too_big} are outside the embedding table "
                           f"({vocab_rows} rows)")
    return {
        "max_positions": max_positions,
        "hidden": cfg["hidden_size"],
        "layers": cfg["num_hidden_layers"],
        "heads": cfg["num_attention_heads"],
        "vocab_rows": vocab_rows,
        **ids,
        # WordPiece maps a whole unknown word to one [UNK]; there is nothing to expand
        "expand_unknown_runs": False,
        "query_prefix": query_prefix,
        "passage_prefix": passage_prefix,
        "inputs": ["input_ids", "attention_mask"],
        "outputs": ["embedding", "pooled"],
        "source": src.resolve().name,
        "source_sha256": source_sha256,
    }


# --------------------------------------------------------------------------------------------
# ONNX graph
# --------------------------------------------------------------------------------------------
def build_onnx(w: Weights, cfg: dict, max_positions: int, path: Path,
               metadata: dict[str, str]) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    H, L, NH = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    FF, eps = cfg["intermediate_size"], float(cfg.get("layer_norm_eps", 1e-12))
    act = ACTIVATIONS[cfg.get("hidden_act", "gelu")]
    word = w.tensors[w.prefix + Weights.SUFFIX]
    if word.ndim != 2 or word.shape[1] != H:
        raise ConvertError(f"word embeddings have shape {list(word.shape)}, hidden_size is {H}")
    nodes: list = []
    inits: list = []
    counter = [0]

    def init(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(op_type: str, inputs: list[str], n_out: int = 1, domain: str = "", **attrs):
        counter[0] += 1
        n = counter[0]
        outs = [f"{op_type.lower()}_{n}" + (f"_{i}" if n_out > 1 else "") for i in range(n_out)]
        nodes.append(helper.make_node(op_type, inputs, outs, name=f"{op_type}_{n}",
                                      domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    def linear(x: str, name: str, weight: np.ndarray, bias: np.ndarray) -> str:
        """y = x W^T + b for a torch Linear weight W [out, in]."""
        y = op("MatMul", [x, init(f"{name}.weight_t", weight.T)])
        return op("Add", [y, init(f"{name}.bias", bias)])

    def layer_norm(x: str, name: str) -> str:
        return op("LayerNormalization",
                  [x, init(f"{name}.weight", w.get(f"{name}.weight", (H,))),
                   init(f"{name}.bias", w.get(f"{name}.bias", (H,)))],
                  axis=-1, epsilon=eps)

    # ---- embeddings: word + position (cumsum of the mask - 1) + token type 0, LayerNorm
    x = op("Gather", [init("embeddings.word_embeddings.weight", word), "input_ids"], axis=0)
    pos_table = w.get("embeddings.position_embeddings.weight",
                      (cfg["max_position_embeddings"], H))[:max_positions]
    one = init("const.one_i64", np.array(1, np.int64))
    zero = init("const.zero_i64", np.array(0, np.int64))
    axis1 = init("const.axis1", np.array(1, np.int64))
    positions = op("Max", [op("Sub", [op("CumSum", ["attention_mask", axis1]), one]), zero])
    x = op("Add", [x, op("Gather", [init("embeddings.position_embeddings.weight", pos_table),
                                    positions], axis=0)])
    if w.has("embeddings.token_type_embeddings.weight"):
        types = w.tensors[w.prefix + "embeddings.token_type_embeddings.weight"]
        if types.ndim != 2 or types.shape[1] != H or types.shape[0] < 1:
            raise ConvertError(f"token type embeddings have shape {list(types.shape)}")
        x = op("Add", [x, init("embeddings.token_type_embeddings.row0", types[0])])
    x = layer_norm(x, "embeddings.LayerNorm")

    # ---- encoder layers (post-LN BERT)
    key_padding_mask = op("Cast", ["attention_mask"], to=TensorProto.INT32)
    for layer in range(L):
        p = f"encoder.layer.{layer}."
        att = p + "attention.self."
        qkv_w = np.concatenate([w.get(att + f"{n}.weight", (H, H))
                                for n in ("query", "key", "value")], axis=0)
        qkv_b = np.concatenate([w.get(att + f"{n}.bias", (H,)) for n in ("query", "key", "value")])
        qkv = linear(x, p + "attention.qkv", qkv_w, qkv_b)
        q, k, v = op("Split", [qkv, init(p + "qkv.split", np.array([H, H, H], np.int64))],
                     n_out=3, axis=-1)
        ctx = op("MultiHeadAttention", [q, k, v, "", key_padding_mask], domain=MS, num_heads=NH)
        ao = linear(ctx, p + "attention.output.dense",
                    w.get(p + "attention.output.dense.weight", (H, H)),
                    w.get(p + "attention.output.dense.bias", (H,)))
        x = layer_norm(op("Add", [x, ao]), p + "attention.output.LayerNorm")
        mid = linear(x, p + "intermediate.dense", w.get(p + "intermediate.dense.weight", (FF, H)),
                     w.get(p + "intermediate.dense.bias", (FF,)))
        if act == "erf":
            mid = op("Gelu", [mid], domain=MS)
        elif act == "tanh":
            mid = op("FastGelu", [mid], domain=MS)  # 0.5x(1 + tanh(0.79788456(x + 0.044715x^3)))
        else:
            mid = op("Relu", [mid])
        fo = linear(mid, p + "output.dense", w.get(p + "output.dense.weight", (H, FF)),
                    w.get(p + "output.dense.bias", (H,)))
        x = layer_norm(op("Add", [x, fo]), p + "output.LayerNorm")

    # ---- masked mean pooling ([CLS] and [SEP] included), then L2 normalisation
    mask_f = op("Unsqueeze", [op("Cast", ["attention_mask"], to=TensorProto.FLOAT),
                              init("const.axis_last", np.array([-1], np.int64))])
    axes1 = init("const.axes1", np.array([1], np.int64))
    summed = op("ReduceSum", [op("Mul", [x, mask_f]), axes1], keepdims=0)
    count = op("ReduceSum", [mask_f, axes1], keepdims=0)  # [batch, 1]
    mean = op("Div", [summed, op("Max", [count, init("const.one_f", np.array(1, np.float32))])])
    norm = op("ReduceL2", [mean], axes=[-1], keepdims=1)
    norm = op("Max", [norm, init("const.min_norm", np.array(1e-6, np.float32))])
    nodes.append(helper.make_node("Div", [mean, norm], ["embedding"], name="l2_normalise"))
    nodes.append(helper.make_node("Identity", [mean], ["pooled"], name="pooled"))

    graph = helper.make_graph(
        nodes, "hf_bert_mean_pooled",
        inputs=[helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
                helper.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                              ["batch", "seq"])],
        outputs=[helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", H]),
                 helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", H])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(MS, 1)],
                              producer_name="verbatim-models-convert-hf", producer_version="1")
    model.ir_version = 8
    model.doc_string = (f"{metadata.get('source', 'BERT encoder')} converted from safetensors "
                        f"(fp32); output: L2-normalised masked-mean sentence embedding")
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    if model.ByteSize() > (2 << 30) - (16 << 20):
        raise ConvertError("the model is too large for a single-file ONNX graph (2 GB protobuf "
                           "limit); external-data output is not implemented")
    onnx.checker.check_model(model)  # structural check (contrib ops are not schema-checked)
    onnx.save_model(model, str(path))


# --------------------------------------------------------------------------------------------
def expected_info(src: Path, max_positions: int | None = None, query_prefix: str = "",
                  passage_prefix: str = "", source_sha256: str | None = None) -> dict:
    """model_info.json for SRC_DIR without loading the weights (prepare.py's staleness check)."""
    cfg = load_config(src)
    header, _ = read_safetensors_header(src / "model.safetensors")
    word = [v for k, v in header.items() if k.endswith(Weights.SUFFIX)]
    if not word:
        raise ConvertError(f"model.safetensors has no *{Weights.SUFFIX} tensor")
    maxp = resolve_max_positions(cfg, max_positions)
    return model_info(src, cfg, load_tokenizer_json(src), int(word[0]["shape"][0]),
                      source_sha256 or sha256_of(src / "model.safetensors"), maxp,
                      query_prefix, passage_prefix)


def resolve_max_positions(cfg: dict, requested: int | None) -> int:
    table = cfg["max_position_embeddings"]
    if requested is None:
        return table
    if not 3 <= requested <= table:
        raise ConvertError(f"--max-positions {requested}: must be 3..{table} "
                           f"(config max_position_embeddings)")
    return requested


def convert(src: Path, out: Path, max_positions: int | None = None, query_prefix: str = "",
            passage_prefix: str = "", allow_other_pooling: bool = False,
            log=print) -> dict:
    """Write OUT/model.onnx, tokenizer.json and model_info.json (each atomically, model_info.json
    last). Returns the model_info dict."""
    t0 = time.perf_counter()
    src = src.resolve()
    cfg = load_config(src)
    if not allow_other_pooling:
        check_pooling(src)
    maxp = resolve_max_positions(cfg, max_positions)
    tok = load_tokenizer_json(src)
    st_path = src / "model.safetensors"
    if not st_path.exists():
        raise ConvertError(f"{st_path} not found")
    source_sha = sha256_of(st_path)
    tensors = read_safetensors(st_path)
    w = Weights(tensors, cfg)
    vocab_rows = int(tensors[w.prefix + Weights.SUFFIX].shape[0])
    info = model_info(src, cfg, tok, vocab_rows, source_sha, maxp, query_prefix, passage_prefix)
    dtypes = sorted({h["dtype"] for h in read_safetensors_header(st_path)[0].values()})
    t1 = time.perf_counter()
    log(f"read {src.name}: {len(tensors)} tensors ({', '.join(dtypes)}), prefix "
        f"{w.prefix or '(none)'!r}, {cfg['num_hidden_layers']} layers, hidden "
        f"{cfg['hidden_size']}, {cfg['num_attention_heads']} heads, ffn "
        f"{cfg['intermediate_size']}, eps {cfg.get('layer_norm_eps', 1e-12):g}, act "
        f"{cfg.get('hidden_act', 'gelu')}, {vocab_rows} vocab rows ({t1 - t0:.2f} s)")

    out.mkdir(parents=True, exist_ok=True)
    metadata = {"source": src.name, "source_sha256": source_sha,
                "bos_id": str(info["bos_id"]), "eos_id": str(info["eos_id"]),
                "pad_id": str(info["pad_id"]), "max_positions": str(maxp),
                "hidden": str(cfg["hidden_size"]), "query_prefix": query_prefix,
                "passage_prefix": passage_prefix}
    tmp = out / "model.onnx.partial"
    build_onnx(w, cfg, maxp, tmp, metadata)
    os.replace(tmp, out / "model.onnx")
    t2 = time.perf_counter()
    log(f"wrote {out / 'model.onnx'} ({(out / 'model.onnx').stat().st_size:,} B) in "
        f"{t2 - t1:.2f} s")
    tmp = out / "tokenizer.json.partial"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(tok, fh, ensure_ascii=False, separators=(",", ":"))
    os.replace(tmp, out / "tokenizer.json")
    tmp = out / "model_info.json.partial"
    tmp.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out / "model_info.json")
    log(f"wrote tokenizer.json ({(out / 'tokenizer.json').stat().st_size:,} B) and "
        f"model_info.json; total {time.perf_counter() - t0:.2f} s")
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="HF model directory (config.json, "
                        "model.safetensors, tokenizer.json)")
    parser.add_argument("out", type=Path, help="output directory")
    parser.add_argument("--max-positions", type=int, default=None,
                        help="positions the graph accepts and model_info.json reports (default: "
                        "config max_position_embeddings)")
    parser.add_argument("--query-prefix", default="", help='model_info.json query_prefix ("")')
    parser.add_argument("--passage-prefix", default="",
                        help='model_info.json passage_prefix ("")')
    parser.add_argument("--allow-other-pooling", action="store_true",
                        help="convert even if 1_Pooling/config.json asks for CLS/max pooling")
    args = parser.parse_args()
    try:
        convert(args.src, args.out, args.max_positions, args.query_prefix, args.passage_prefix,
                args.allow_other_pooling, log=lambda m: print(f"[convert_hf] {m}", flush=True))
    except ConvertError as err:
        print(f"[convert_hf] error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
