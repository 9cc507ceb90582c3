#!/usr/bin/env bash
# Latency of the first date sort a server answers over segments whose dates
# follow no order (an import of old feedback), against the second one
# (BENCHMARKS.md "The first date sort after a merge").
#
#   benches/first-date-sort.sh BIN_BEFORE BIN_AFTER [ITEMS] [ROUNDS] [WAIT_S]
#   (default 200000 items, 5 rounds, 0.5 s)
#
# Imports ITEMS rows of random words with random dates over 300 days
# (benches/random_items.py ... dated) into a fresh data dir with BIN_AFTER,
# then per round, for each build in turn: starts `serve --analysis off` on
# that data dir, waits until it listens and WAIT_S more (the indexer's first
# round), and times `search --sort newest` of everything (the latest
# feedback, a walk in date order) twice, then `--sort oldest` once, each
# through the CLI (its own start included: compare the rows, not the
# absolute numbers). Prints one line per start: build, ms to listen, ms of
# the three searches.
set -euo pipefail
BEFORE=${1:?usage: benches/first-date-sort.sh BIN_BEFORE BIN_AFTER [ITEMS] [ROUNDS] [WAIT_S]}
AFTER=${2:?usage: benches/first-date-sort.sh BIN_BEFORE BIN_AFTER [ITEMS] [ROUNDS] [WAIT_S]}
ITEMS=${3:-200000}
ROUNDS=${4:-5}
WAIT_S=${5:-0.5}
WORK=$(mktemp -d)
trap 'kill -9 ${PID:-} 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=$(python3 "$(dirname "$0")/random_items.py" "$WORK/items.jsonl" "$ITEMS" 150 dated)
SERVER="http://127.0.0.1:$PORT"
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
start() {
    : > "$WORK/server.log"
    "$1" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --analysis off > "$WORK/server.log" 2>&1 &
    PID=$!
    for _ in $(seq 600); do grep -q "listening addr" "$WORK/server.log" && return; sleep 0.005; done
    echo "the server did not start:" >&2; cat "$WORK/server.log" >&2; exit 1
}
stop() {
    kill "$PID"
    while kill -0 "$PID" 2>/dev/null; do sleep 0.05; done
}
start "$AFTER"
"$AFTER" import --server "$SERVER" "$WORK/items.jsonl" > "$WORK/import.log" 2>&1
until "$AFTER" search --server "$SERVER" --limit 1 --json "" | grep -q "\"total_hits\": *\"\?$ITEMS"; do sleep 1; done
stop
echo "segments: $(ls "$WORK"/data/index/v*/*.idx | wc -l), items: $ITEMS"
echo "build listen_ms first_newest_ms second_newest_ms oldest_ms"
for _ in $(seq "$ROUNDS"); do
    for build in before after; do
        bin=$BEFORE; [ "$build" = after ] && bin=$AFTER
        a=$(now_ms); start "$bin"; b=$(now_ms)
        sleep "$WAIT_S"
        c=$(now_ms); "$bin" search --server "$SERVER" --sort newest --limit 10 "" > /dev/null
        d=$(now_ms); "$bin" search --server "$SERVER" --sort newest --limit 10 "" > /dev/null
        e=$(now_ms); "$bin" search --server "$SERVER" --sort oldest --limit 10 "" > /dev/null
        f=$(now_ms)
        echo "$build $((b - a)) $((d - c)) $((e - d)) $((f - e))"
        stop
    done
done
