#!/usr/bin/env python3
"""Writes ITEMS JSON Lines rows whose texts are drawn as the load
benchmark's corpus is (benches/load.rs `corpus_item`), then prints a free
local TCP port for the server the calling script starts.

    python3 benches/sample_vocab_items.py PATH ITEMS

The vocabulary: the words of tests/data/sample-feedback.jsonl (maximal
alphanumeric runs, lower-cased, longer than one character), most frequent
first. Each row: {"id": "sample-N", "text": 20-39 words, the word of rank
V * u^2 for a uniform u (frequent words common, as in feedback), one row
in 50 with "late delivery" in the middle, "channel": "survey"}. Fixed seed.
The same distribution as the load benchmark's texts, not the same texts
(another generator).
"""
import collections
import json
import random
import re
import socket
import sys
from pathlib import Path

path, items = sys.argv[1], int(sys.argv[2])
sample = Path(__file__).resolve().parent.parent / "tests" / "data" / "sample-feedback.jsonl"
counts = collections.Counter()
with open(sample) as rows:
    for row in rows:
        for word in re.split(r"[^\w]|_", json.loads(row)["text"]):
            if len(word) > 1:
                counts[word.lower()] += 1
vocab = [word for word, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
rng = random.Random(0x5EA2C4)
with open(path, "w") as out:
    for i in range(items):
        n = 20 + rng.randrange(20)
        words = [vocab[int(rng.random() ** 2 * len(vocab))] for _ in range(n)]
        if rng.randrange(50) == 0:
            words.insert(n // 2, "late delivery")
        out.write(json.dumps({"id": f"sample-{i}", "text": " ".join(words), "channel": "survey"}) + "\n")
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
