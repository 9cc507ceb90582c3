#!/usr/bin/env python3
"""Instructions a search costs the server, counted by valgrind's callgrind:
deterministic where a timed run moves by 10-30% from hour to hour, so a
change of a few percent shows in one run (benches/search-instructions.sh
runs it; BENCHMARKS.md "Instructions per search").

    PYTHON benches/search_instructions.py PORT SERVER_PID ITEMS_JSONL [CALLS]

SERVER_PID is a server running under `valgrind --tool=callgrind`. Per case:
a warm-up of 50 calls, the counters zeroed (`callgrind_control -z`), CALLS
calls (default 300, one client, sequential), the counters dumped
(`callgrind_control -d`); prints the server's instructions per call, every
thread's. The queries are words of the corpus (ITEMS_JSONL, rows of
benches/random_items.py or benches/sample_vocab_items.py), drawn with a fixed seed, so two builds run the
same calls. A pair of words is two adjacent words of a text. Needs grpcio and grpcio-tools (the venv of tests/blackbox/run.sh).
"""
import glob
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import verbatim_harness  # noqa: E402

port, pid, items = sys.argv[1], sys.argv[2], sys.argv[3]
calls = int(sys.argv[4]) if len(sys.argv) > 4 else 300
verbatim_harness.generate_stubs(Path(tempfile.mkdtemp()))
import grpc  # noqa: E402
from verbatim.v1 import feedback_pb2 as pb  # noqa: E402
from verbatim.v1 import feedback_pb2_grpc as rpc  # noqa: E402

FULL, IDS = 1, 3
RELEVANCE, NEWEST = 1, 2

# Words of the corpus, and pairs of adjacent words (phrases).
rng = random.Random(20261207)
with open(items) as rows:
    texts = [json.loads(row)["text"] for _, row in zip(range(20_000), rows)]
words, phrases = [], []
for _ in range(calls + 50):
    text = rng.choice(texts).split()
    at = rng.randrange(len(text) - 1)
    words.append(text[at])
    phrases.append(f'"{text[at]} {text[at + 1]}"')


def search(query, view=FULL, sort=RELEVANCE):
    return pb.SearchRequest(query=query, limit=10, view=view, sort=sort)


CASES = [
    ("single term, full view", [search(w) for w in words]),
    ("single term, ids view", [search(w, IDS) for w in words]),
    ("single term, newest, full view", [search(w, FULL, NEWEST) for w in words]),
    ("two words (both required), full view", [search(p.strip('"')) for p in phrases]),
    ("two-word phrase, full view", [search(p) for p in phrases]),
    ("two words (either), full view", [search(f"{a} OR {b}") for a, b in zip(words, words[1:] + words[:1])]),
    ("a word in no item (the fixed cost)", [search(f"zz{i}qq") for i in range(calls + 50)]),
]

channel = grpc.insecure_channel(f"127.0.0.1:{port}")
stub = rpc.FeedbackServiceStub(channel)
deadline = time.time() + 600
while True:  # valgrind starts the server ~50 times slower
    try:
        stub.Search(search("warm"), timeout=60)
        break
    except grpc.RpcError:
        if time.time() > deadline:
            raise
        time.sleep(1)

out_dir = Path(tempfile.mkdtemp())
print(f"| case | calls | hits per call | server instructions per call |")
print(f"|---|---:|---:|---:|")
for n, (name, requests) in enumerate(CASES):
    for request in requests[:50]:
        stub.Search(request, timeout=60)
    subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
    hits = 0
    for request in requests[50:]:
        hits += len(stub.Search(request, timeout=60).hits)
    subprocess.run(["callgrind_control", "-d", f"case{n}", pid], check=True, capture_output=True)
    instructions = None
    for dump in glob.glob(f"{os.environ['CALLGRIND_OUT']}.*"):
        with open(dump) as lines:
            text = lines.read()
        if f"desc: Trigger: dump case{n}\n" in text:
            instructions = next(int(line.split()[1]) for line in text.splitlines()
                                if line.startswith("summary:"))
            os.remove(dump)
    count = len(requests) - 50
    print(f"| {name} | {count} | {hits / count:.1f} | {instructions / count:,.0f} |", flush=True)
