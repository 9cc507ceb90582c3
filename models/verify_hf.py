#!/usr/bin/env python3.11
"""Check a convert_hf.py output against an independent numpy BERT forward pass.

    models/cache/venv/bin/python models/verify_hf.py [SRC_DIR OUT_DIR] [--no-synthetic]

Defaults: SRC_DIR models/cache/all-minilm-l6-v2, OUT_DIR models/cache/all-minilm-l6-v2-onnx.
Prints one line per check and PASS/FAIL at the end; exit status 1 on FAIL.

The reference reads model.safetensors with its own parser (not convert_hf's) and runs the
Hugging Face BertModel computation in float64, one text at a time and unpadded (position ids
0..n-1, token type 0, post-LN layers, GELU as config.hidden_act says), then masked mean pooling
and L2 normalisation as sentence-transformers does. Nothing is taken from the ONNX graph.

Checks:
  files       model_info.json (keys of e5-small/model_info.json + expand_unknown_runs, values from
              config.json and the tokenizer vocabulary); tokenizer.json has padding/truncation
              null and gives the same ids as the source tokenizer.json with its padding and
              truncation switched off; every text encodes as [CLS] ... [SEP]
  embeddings  ONNX Runtime (model.onnx, ids from tokenizer.json) vs the numpy reference on 20
              English sentences: cosine >= 0.9999 per sentence; `pooled` vs the reference mean
  long        a 512-token input (the whole position table) vs the reference
  padding     one right-padded batch, and one left-padded batch, vs one text at a time
  semantics   a paraphrase pair is closer than an unrelated pair (the weights are the right ones)
  synthetic   a random tiny BERT written as F16 and BF16 safetensors with a `bert.` prefix and
              extra head tensors, through convert_hf.convert, vs the reference (skipped with
              --no-synthetic)
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent
CACHE = MODELS_DIR / "cache"
COSINE_MIN = 0.9999
PAD_MAX_ABS = 1e-5

SENTENCES = [
    "The delivery was fast and the product works perfectly.",
    "Terrible customer service, I waited two hours on the phone and nobody helped me.",
    "It's okay, nothing special.",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The stock market fell sharply today after the announcement.",
    "Love it!!! 😍😍😍",
    "Worst purchase ever 😡👎 never again",
    "The app is fine but login fails sometimes on iOS 17.2",
    "Price went up 20% since January; still worth it? Not sure…",
    "Café crème, naïve façade, coöperate: accents should be stripped or kept consistently.",
    "ALL CAPS REVIEW: THE BATTERY DIED AFTER TWO DAYS",
    "Order #A-12345 arrived on 2024-03-01 at 09:30, box damaged.",
    "I bought this for my daughter's birthday and she absolutely loves it, thank you!",
    "Mixed: 東京 store, great staff",
    "antidisestablishmentarianism supercalifragilisticexpialidocious",
    "Refund took 3 weeks.",
    "Ok",
    "",
    "The quick brown fox jumps over the lazy dog, while the customer support team takes another "
    "coffee break and the ticket queue keeps growing for the third consecutive week.",
]
PARAPHRASE = (3, 4)   # "A man is eating food." ~ "A man is eating a piece of bread."
UNRELATED = (3, 5)    # ... vs the stock market


# --------------------------------------------------------------------------------------------
# independent reference: safetensors reader + BERT forward pass in float64
# --------------------------------------------------------------------------------------------
def load_safetensors_f64(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        lo, hi = meta["data_offsets"]
        raw = data[8 + n + lo:8 + n + hi]
        if meta["dtype"] == "F32":
            a = np.frombuffer(raw, "<f4").astype(np.float64)
        elif meta["dtype"] == "F16":
            a = np.frombuffer(raw, "<f2").astype(np.float64)
        elif meta["dtype"] == "BF16":
            a = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view("<f4").astype(np.float64)
        else:
            continue  # integer buffers (position_ids) are not weights
        out[name] = a.reshape(meta["shape"])
    return out


_erf = np.frompyfunc(math.erf, 1, 1)


def activation(name: str, x: np.ndarray) -> np.ndarray:
    if name == "gelu":
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if name == "relu":
        return np.maximum(x, 0.0)
    raise ValueError(name)


class ReferenceBert:
    def __init__(self, src: Path) -> None:
        self.cfg = json.loads((src / "config.json").read_text())
        t = load_safetensors_f64(src / "model.safetensors")
        pre = "bert." if "bert.embeddings.word_embeddings.weight" in t else ""
        self.w = {k[len(pre):]: v for k, v in t.items() if k.startswith(pre)}

    def hidden_states(self, ids: list[int]) -> np.ndarray:
        """HF BertModel last_hidden_state for one unpadded sequence (token types 0)."""
        c, w = self.cfg, self.w
        H, NH = c["hidden_size"], c["num_attention_heads"]
        D, eps, act = H // NH, c.get("layer_norm_eps", 1e-12), c.get("hidden_act", "gelu")
        n = len(ids)

        def ln(x, name):
            mu = x.mean(-1, keepdims=True)
            var = ((x - mu) ** 2).mean(-1, keepdims=True)
            return (x - mu) / np.sqrt(var + eps) * w[name + ".weight"] + w[name + ".bias"]

        def dense(x, name):
            return x @ w[name + ".weight"].T + w[name + ".bias"]

        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][np.arange(n)])
        if "embeddings.token_type_embeddings.weight" in w:
            x = x + w["embeddings.token_type_embeddings.weight"][0]
        x = ln(x, "embeddings.LayerNorm")
        for i in range(c["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            q, k, v = (dense(x, p + f"attention.self.{m}").reshape(n, NH, D).transpose(1, 0, 2)
                       for m in ("query", "key", "value"))
            s = q @ k.transpose(0, 2, 1) / math.sqrt(D)
            s = np.exp(s - s.max(-1, keepdims=True))
            ctx = (s / s.sum(-1, keepdims=True)) @ v
            ctx = ctx.transpose(1, 0, 2).reshape(n, H)
            x = ln(x + dense(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            mid = activation(act, dense(x, p + "intermediate.dense"))
            x = ln(x + dense(mid, p + "output.dense"), p + "output.LayerNorm")
        return x

    def embed(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        mean = self.hidden_states(ids).mean(0)
        return mean / max(np.linalg.norm(mean), 1e-12), mean


# --------------------------------------------------------------------------------------------
class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def check(self, ok: bool, name: str, detail: str) -> None:
        print(f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}", flush=True)
        if not ok:
            self.failed.append(name)


def session(path: Path, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 4  # the over-long input below fails on purpose; keep it quiet
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_batch(sess, seqs: list[list[int]], pad_id: int, left: bool = False):
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, np.int64)
    mask = np.zeros((len(seqs), width), np.int64)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, sl], mask[i, sl] = s, 1
    emb, pooled = sess.run(["embedding", "pooled"], {"input_ids": ids, "attention_mask": mask})
    return emb, pooled


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def verify_model(src: Path, out: Path, checks: Checks, sentences: list[str], label: str,
                 semantic: bool, long_check: bool, bench: bool) -> None:
    from tokenizers import Tokenizer

    print(f"{label}: {src} -> {out}", flush=True)
    cfg = json.loads((src / "config.json").read_text())
    info = json.loads((out / "model_info.json").read_text())

    # ---- files
    e5_info = CACHE / "e5-small/model_info.json"
    want_keys = (set(json.loads(e5_info.read_text())) if e5_info.exists() else set()) | {
        "max_positions", "hidden", "layers", "heads", "vocab_rows", "bos_id", "eos_id", "pad_id",
        "unk_id", "query_prefix", "passage_prefix", "inputs", "outputs", "source",
        "source_sha256", "expand_unknown_runs"}
    checks.check(set(info) == want_keys, f"{label} model_info keys",
                 "same as e5-small + expand_unknown_runs" if set(info) == want_keys else
                 f"missing {sorted(want_keys - set(info))}, extra {sorted(set(info) - want_keys)}")
    src_tok_json = json.loads((src / "tokenizer.json").read_text())
    vocab = dict(src_tok_json["model"]["vocab"])
    vocab.update({a["content"]: a["id"] for a in src_tok_json.get("added_tokens", [])})
    expect = {"hidden": cfg["hidden_size"], "layers": cfg["num_hidden_layers"],
              "heads": cfg["num_attention_heads"], "max_positions": cfg["max_position_embeddings"],
              "bos_id": vocab["[CLS]"], "eos_id": vocab["[SEP]"], "pad_id": vocab["[PAD]"],
              "unk_id": vocab["[UNK]"], "expand_unknown_runs": False,
              "inputs": ["input_ids", "attention_mask"], "outputs": ["embedding", "pooled"],
              "source": src.resolve().name}
    bad = {k: (info.get(k), v) for k, v in expect.items() if info.get(k) != v}
    checks.check(not bad, f"{label} model_info values",
                 "match config.json and the vocabulary" if not bad else f"(got, want) {bad}")
    out_tok_json = json.loads((out / "tokenizer.json").read_text())
    checks.check(out_tok_json.get("padding") is None and out_tok_json.get("truncation") is None,
                 f"{label} tokenizer.json", f"padding {out_tok_json.get('padding')}, truncation "
                 f"{out_tok_json.get('truncation')}")
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    ref_tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    ref_tok.no_padding()
    ref_tok.no_truncation()
    ids = [tok.encode(s).ids for s in sentences]
    ref_ids = [ref_tok.encode(s).ids for s in sentences]
    framed = sum(x[0] == info["bos_id"] and x[-1] == info["eos_id"] and
                 info["pad_id"] not in x for x in ids)
    checks.check(framed == len(ids), f"{label} [CLS] ... [SEP]",
                 f"{framed}/{len(ids)} texts framed, unpadded ({sum(map(len, ids))} tokens, "
                 f"longest {max(map(len, ids))})")
    same = sum(a == b for a, b in zip(ids, ref_ids))
    checks.check(same == len(ids), f"{label} ids vs source tokenizer",
                 f"{same}/{len(ids)} identical (source with padding/truncation off)")

    # ---- embeddings vs the reference
    t0 = time.perf_counter()
    ref = ReferenceBert(src)
    refs = [ref.embed(x) for x in ids]
    t_ref = time.perf_counter() - t0
    sess = session(out / "model.onnx")
    singles = [run_batch(sess, [x], info["pad_id"]) for x in ids]
    cos = [cosine(e[0][0], r[0]) for e, r in zip(singles, refs)]
    pooled_rel = max(float(np.abs(e[1][0] - r[1]).max() / np.abs(r[1]).max())
                     for e, r in zip(singles, refs))
    checks.check(min(cos) >= COSINE_MIN, f"{label} cosine ONNX vs numpy ({len(cos)} texts)",
                 f"min {min(cos):.9f} (1 - {1 - min(cos):.1e}), mean {np.mean(cos):.9f} "
                 f"(need >= {COSINE_MIN}); "
                 f"embedding max |diff| {max(float(np.abs(e[0][0] - r[0]).max()) for e, r in zip(singles, refs)):.2e}; "
                 f"pooled max rel diff {pooled_rel:.2e}; reference took {t_ref:.1f} s")
    norms = np.array([np.linalg.norm(e[0][0]) for e in singles])
    consistent = max(float(np.abs(e[0][0] - e[1][0] / np.linalg.norm(e[1][0])).max())
                     for e in singles)
    checks.check(np.allclose(norms, 1, atol=1e-5) and consistent < 1e-6,
                 f"{label} embedding = normalize(pooled)",
                 f"norms {norms.min():.6f}..{norms.max():.6f}, max |diff| {consistent:.1e}")

    # ---- long input: the whole position table
    if long_check:
        maxp = info["max_positions"]
        body = tok.encode(" ".join(sentences[:15]) * 20).ids[1:-1][:maxp - 2]
        long_ids = [info["bos_id"], *body, info["eos_id"]]
        long_emb, _ = run_batch(sess, [long_ids], info["pad_id"])
        c = cosine(long_emb[0], ref.embed(long_ids)[0])
        checks.check(len(long_ids) == maxp and c >= COSINE_MIN, f"{label} {len(long_ids)}-token input",
                     f"cosine {c:.9f} (1 - {1 - c:.1e})")
        try:
            run_batch(sess, [long_ids + [info["eos_id"]]], info["pad_id"])
            over = "accepted (unexpected)"
        except Exception:  # noqa: BLE001 - ORT raises its own exception types
            over = "rejected, as documented"
        print(f"  [info] {label} {maxp + 1} positions: {over}", flush=True)

    # ---- padding independence
    single_emb = np.stack([e[0][0] for e in singles])
    right, _ = run_batch(sess, ids, info["pad_id"])
    left, _ = run_batch(sess, ids, info["pad_id"], left=True)
    d_right = float(np.abs(right - single_emb).max())
    d_left = float(np.abs(left - single_emb).max())
    checks.check(max(d_right, d_left) < PAD_MAX_ABS, f"{label} batch/padding independence",
                 f"right-padded batch max |diff| {d_right:.1e}, left-padded {d_left:.1e} "
                 f"(batch of {len(ids)}, width {max(map(len, ids))})")

    if semantic:
        para = float(single_emb[PARAPHRASE[0]] @ single_emb[PARAPHRASE[1]])
        unrel = float(single_emb[UNRELATED[0]] @ single_emb[UNRELATED[1]])
        checks.check(para > unrel + 0.2, f"{label} semantics",
                     f"paraphrase cosine {para:.3f} vs unrelated {unrel:.3f}")

    if bench:
        sess2 = session(out / "model.onnx", threads=2)
        run_batch(sess2, ids, info["pad_id"])
        t = time.perf_counter()
        reps = 5
        for _ in range(reps):
            run_batch(sess2, ids, info["pad_id"])
        dt = (time.perf_counter() - t) / reps
        t = time.perf_counter()
        for x in ids:
            run_batch(sess2, [x], info["pad_id"])
        dt1 = (time.perf_counter() - t) / len(ids)
        print(f"  [info] {label} speed (2 threads): batch of {len(ids)} in {dt * 1e3:.1f} ms "
              f"({len(ids) / dt:.0f} texts/s); one text at a time {dt1 * 1e3:.1f} ms each",
              flush=True)


# --------------------------------------------------------------------------------------------
def write_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    """tensors: name -> (dtype tag, array already in that dtype's numpy layout)."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, (tag, arr) in tensors.items():
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": tag, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def synthetic_model(dst: Path, tokenizer_src: Path, dtype: str, act: str, seed: int) -> None:
    """A random 2-layer BERT (hidden 64, 4 heads) with the real tokenizer's vocabulary."""
    rng = np.random.default_rng(seed)
    tok = json.loads((tokenizer_src / "tokenizer.json").read_text())
    V, H, FF, L, P = len(tok["model"]["vocab"]), 64, 128, 2, 96
    cfg = {"architectures": ["BertForMaskedLM"], "model_type": "bert", "hidden_size": H,
           "num_hidden_layers": L, "num_attention_heads": 4, "intermediate_size": FF,
           "max_position_embeddings": P, "type_vocab_size": 2, "hidden_act": act,
           "layer_norm_eps": 1e-7, "pad_token_id": 0, "vocab_size": V}
    shapes = {"embeddings.word_embeddings.weight": (V, H),
              "embeddings.position_embeddings.weight": (P, H),
              "embeddings.token_type_embeddings.weight": (2, H),
              "embeddings.LayerNorm.weight": (H,), "embeddings.LayerNorm.bias": (H,)}
    for i in range(L):
        p = f"encoder.layer.{i}."
        for m in ("query", "key", "value"):
            shapes[p + f"attention.self.{m}.weight"] = (H, H)
            shapes[p + f"attention.self.{m}.bias"] = (H,)
        shapes.update({p + "attention.output.dense.weight": (H, H),
                       p + "attention.output.dense.bias": (H,),
                       p + "attention.output.LayerNorm.weight": (H,),
                       p + "attention.output.LayerNorm.bias": (H,),
                       p + "intermediate.dense.weight": (FF, H), p + "intermediate.dense.bias": (FF,),
                       p + "output.dense.weight": (H, FF), p + "output.dense.bias": (H,),
                       p + "output.LayerNorm.weight": (H,), p + "output.LayerNorm.bias": (H,)})
    shapes.update({"pooler.dense.weight": (H, H), "pooler.dense.bias": (H,)})
    tensors: dict[str, tuple[str, np.ndarray]] = {}
    for name, shape in shapes.items():
        if name.endswith("LayerNorm.weight"):
            a = 1.0 + 0.2 * rng.standard_normal(shape)
        else:
            a = (0.5 if name.startswith("embeddings") else 0.15) * rng.standard_normal(shape)
        a = a.astype(np.float32)
        if dtype == "F16":
            tensors["bert." + name] = ("F16", a.astype("<f2"))
        else:  # BF16: truncate float32 to its top 16 bits
            tensors["bert." + name] = ("BF16", (a.view(np.uint32) >> 16).astype("<u2"))
    tensors["bert.embeddings.position_ids"] = ("I64", np.arange(P, dtype="<i8")[None])
    tensors["cls.predictions.bias"] = ("F32", np.zeros(V, "<f4"))  # an MLM head, ignored
    dst.mkdir(parents=True)
    write_safetensors(dst / "model.safetensors", tensors)
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    shutil.copy(tokenizer_src / "tokenizer.json", dst / "tokenizer.json")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", nargs="?", type=Path, default=CACHE / "all-minilm-l6-v2")
    parser.add_argument("out", nargs="?", type=Path, default=CACHE / "all-minilm-l6-v2-onnx")
    parser.add_argument("--no-synthetic", action="store_true")
    parser.add_argument("--bench", action="store_true", help="also time ONNX Runtime")
    args = parser.parse_args()
    t0 = time.perf_counter()
    checks = Checks()
    for need in (args.src / "model.safetensors", args.out / "model.onnx"):
        if not need.exists():
            print(f"FAIL: {need} not found (run models/prepare.py or convert_hf.py first)")
            return 1
    verify_model(args.src, args.out, checks, SENTENCES, args.src.resolve().name,
                 semantic=args.src.resolve().name == "all-minilm-l6-v2", long_check=True,
                 bench=args.bench)
    if not args.no_synthetic:
        sys.path.insert(0, str(MODELS_DIR))
        import convert_hf

        with tempfile.TemporaryDirectory(prefix="verify-hf-") as tmp:
            for dtype, act, seed in (("F16", "gelu", 1), ("BF16", "gelu_new", 2)):
                src = Path(tmp) / f"synthetic-{dtype.lower()}"
                out = Path(tmp) / f"synthetic-{dtype.lower()}-onnx"
                synthetic_model(src, args.src, dtype, act, seed)
                convert_hf.convert(src, out, log=lambda m: None)
                verify_model(src, out, checks, SENTENCES, f"synthetic {dtype} bert. {act}",
                             semantic=False, long_check=True, bench=False)
    print(f"{'FAIL' if checks.failed else 'PASS'} ({len(checks.failed)} failed checks"
          f"{': ' + ', '.join(checks.failed) if checks.failed else ''}; "
          f"{time.perf_counter() - t0:.1f} s)")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
