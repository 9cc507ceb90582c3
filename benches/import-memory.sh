#!/usr/bin/env bash
# Peak resident memory of a server while it stores and indexes an import of
# long items (BENCHMARKS.md "Indexer reads bounded in bytes").
#
#   benches/import-memory.sh BIN [ITEMS] [TEXT_BYTES]   (default 4000 items of 30000 bytes)
#
# Writes ITEMS JSONL rows of random words (fixed seed) to a temporary
# directory, starts `BIN serve --analysis off` on a fresh data dir, runs
# `BIN import`, waits until the server used < 5% of a core for 3 s, and
# prints the import's time, the time until idle and the server's VmHWM/VmRSS.
set -euo pipefail
BIN=${1:?usage: benches/import-memory.sh BIN [ITEMS] [TEXT_BYTES]}
ITEMS=${2:-4000}
TEXT_BYTES=${3:-30000}
WORK=$(mktemp -d)
trap 'kill -9 ${PID:-} 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=$(python3 "$(dirname "$0")/random_items.py" "$WORK/items.jsonl" "$ITEMS" "$TEXT_BYTES")
"$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --analysis off > "$WORK/server.log" 2>&1 &
PID=$!
for _ in $(seq 100); do grep -q "listening addr" "$WORK/server.log" && break; sleep 0.1; done
start=$(date +%s.%N)
"$BIN" import --server "http://127.0.0.1:$PORT" "$WORK/items.jsonl" > "$WORK/import.log" 2>&1
imported=$(date +%s.%N)
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
prev=$(ticks); idle=0
while [ "$idle" -lt 3 ]; do
    sleep 1
    cur=$(ticks)
    if [ $((cur - prev)) -lt 5 ]; then idle=$((idle + 1)); else idle=0; fi
    prev=$cur
done
done_at=$(date +%s.%N)
python3 -c "import sys; s,i,d=map(float,sys.argv[1:]); print(f'import {i-s:.1f} s, idle after {d-s:.1f} s')" "$start" "$imported" "$done_at"
grep -E 'VmHWM|VmRSS' "/proc/$PID/status"
tail -n 1 "$WORK/import.log"
