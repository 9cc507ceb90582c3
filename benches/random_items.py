#!/usr/bin/env python3
"""Writes ITEMS JSON Lines rows of random words (fixed seed) for the bench
scripts (benches/import-memory.sh, benches/shutdown-backlog.sh), then prints
a free local TCP port for the server they start.

    python3 benches/random_items.py PATH ITEMS TEXT_BYTES [dated|ordered]

Each row: {"id": "big-N", "text": <TEXT_BYTES of words from a 20,000-word
random vocabulary>, "channel": "survey"}. Random words are the slowest text
to index (every two-word pair is new), the worst case for the indexer.
With `dated` each row also has a `created_at` drawn uniformly from the 300
days before 2025-11-01 (an import of old feedback: its dates follow no
order; benches/first-date-sort.sh). With `ordered` the dates span the same
300 days rising with the row (feedback imported as it was written).
"""
import json
import random
import socket
import sys
import time

path, items, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
dates = sys.argv[4] if len(sys.argv) > 4 else None
END = 1761955200  # 2025-11-01T00:00:00Z
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
        row = {"id": f"big-{i}", "text": " ".join(words)[:size], "channel": "survey"}
        if dates in ("dated", "ordered"):
            if dates == "dated":
                at = END - random.randrange(300 * 86400)
            else:
                at = END - 300 * 86400 + i * 300 * 86400 // items
            row["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        out.write(json.dumps(row) + "\n")
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
