#!/usr/bin/env python3
"""Writes ITEMS JSON Lines rows of random words (fixed seed) for the bench
scripts (benches/import-memory.sh, benches/shutdown-backlog.sh), then prints
a free local TCP port for the server they start.

    python3 benches/random_items.py PATH ITEMS TEXT_BYTES

Each row: {"id": "big-N", "text": <TEXT_BYTES of words from a 20,000-word
random vocabulary>, "channel": "survey"}. Random words are the slowest text
to index (every two-word pair is new), the worst case for the indexer.
"""
import json
import random
import socket
import sys

path, items, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(7)
vocab = [
    "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(random.randint(3, 9)))
    for _ in range(20000)
]
with open(path, "w") as out:
    for i in range(items):
        words, n = [], 0
        while n < size:
            word = random.choice(vocab)
            words.append(word)
            n += len(word) + 1
        out.write(json.dumps({"id": f"big-{i}", "text": " ".join(words)[:size], "channel": "survey"}) + "\n")
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
