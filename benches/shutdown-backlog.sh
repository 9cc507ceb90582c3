#!/usr/bin/env bash
# How long a server takes to exit on SIGTERM right after an import, while
# the import's items still wait to be indexed, and how long the next start
# takes to make them all searchable (BENCHMARKS.md "A shutdown behind a
# backlog").
#
#   benches/shutdown-backlog.sh BIN [ITEMS] [TEXT_BYTES]   (default 2000 items of 30000 bytes)
#
# Writes ITEMS JSONL rows of random words (fixed seed) to a temporary
# directory, starts `BIN serve --analysis off` on a fresh data dir, runs
# `BIN import`, sends SIGTERM as soon as it returns and times the exit (a
# server still running after 300 s is killed), then starts BIN on the same
# data dir and times until a match-all search counts every item.
set -euo pipefail
BIN=${1:?usage: benches/shutdown-backlog.sh BIN [ITEMS] [TEXT_BYTES]}
ITEMS=${2:-2000}
TEXT_BYTES=${3:-30000}
WORK=$(mktemp -d)
trap 'kill -9 ${PID:-} 2>/dev/null || true; [ -n "${KEEP:-}" ] && echo "kept $WORK" || rm -rf "$WORK"' EXIT
PORT=$(python3 "$(dirname "$0")/random_items.py" "$WORK/items.jsonl" "$ITEMS" "$TEXT_BYTES")
serve() {
  "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --analysis off > "$WORK/server-$1.log" 2>&1 &
  PID=$!
  for _ in $(seq 600); do grep -q "listening addr" "$WORK/server-$1.log" && return; sleep 0.1; done
  echo "the server did not start; its log:" >&2; cat "$WORK/server-$1.log" >&2; exit 1
}
now() { date +%s.%N; }
serve first
"$BIN" import --server "http://127.0.0.1:$PORT" "$WORK/items.jsonl" > "$WORK/import.log" 2>&1
term=$(now)
kill -TERM "$PID"
while kill -0 "$PID" 2>/dev/null; do
  if [ "$(echo "$(now) - $term > 300" | bc)" = 1 ]; then echo "still running 300 s after SIGTERM: killed"; kill -9 "$PID"; fi
  sleep 0.02
done
exited=$(now)
echo "exit after SIGTERM: $(echo "$exited - $term" | bc) s"
grep -a "indexer stopped" "$WORK/server-first.log" | sed 's/^[^ ]* *//' || true
start=$(now)
serve second
while :; do
  hits=$("$BIN" search "" --server "http://127.0.0.1:$PORT" 2>/dev/null | head -1 || true)
  [ "$hits" = "$ITEMS hits" ] && break
  if [ "$(echo "$(now) - $start > 600" | bc)" = 1 ]; then echo "not all searchable 600 s after the restart ($hits)"; exit 1; fi
  sleep 0.2
done
echo "restart to all $ITEMS searchable: $(echo "$(now) - $start" | bc) s"
