#!/usr/bin/env bash
# Instructions per search, counted by valgrind's callgrind, two builds on
# one data dir (BENCHMARKS.md "Instructions per search"). Deterministic:
# one run tells a change of a few percent, which timed runs on this shared
# machine do not.
#
#   PYTHON=.venv/bin/python benches/search-instructions.sh BIN_BEFORE BIN_AFTER [ITEMS] [CALLS] [CORPUS]
#   (default 500000 items, 300 calls per case, CORPUS `random`; PYTHON needs
#   grpcio and grpcio-tools, as the venv tests/blackbox/run.sh makes;
#   valgrind: apt-get install valgrind)
#
# Imports ITEMS rows with BIN_AFTER: CORPUS `random`, 300 bytes of words
# from a 20,000-word random vocabulary (benches/random_items.py), or
# `sample`, texts drawn as the load benchmark's are (20-39 words of the
# sample data's vocabulary, frequent words common:
# benches/sample_vocab_items.py). Then each build in turn: starts
# `serve --analysis off` under `valgrind --tool=callgrind`, runs
# benches/search_instructions.py (one client; per case 50 warm-up calls,
# then CALLS counted) and stops it.
# Counts include the transport (tonic, HTTP/2) and every server thread.
set -euo pipefail
USAGE="usage: benches/search-instructions.sh BIN_BEFORE BIN_AFTER [ITEMS] [CALLS] [random|sample]"
BEFORE=${1:?$USAGE}
AFTER=${2:?$USAGE}
ITEMS=${3:-500000}
CALLS=${4:-300}
CORPUS=${5:-random}
PYTHON=${PYTHON:-python3}
HERE=$(dirname "$0")
command -v valgrind > /dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'kill -9 ${PID:-} 2>/dev/null || true; rm -rf "$WORK"' EXIT
case $CORPUS in
    random) PORT=$(python3 "$HERE/random_items.py" "$WORK/items.jsonl" "$ITEMS" 300) ;;
    sample) PORT=$(python3 "$HERE/sample_vocab_items.py" "$WORK/items.jsonl" "$ITEMS") ;;
    *) echo "$USAGE" >&2; exit 2 ;;
esac
SERVER="http://127.0.0.1:$PORT"
start_plain() {
    "$AFTER" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --analysis off >> "$WORK/server.log" 2>&1 &
    PID=$!
    sleep 2
}
stop() {
    kill "$PID"
    while kill -0 "$PID" 2>/dev/null; do sleep 0.2; done
}
segments() { ls "$WORK"/data/index/v*/ | grep -c '\.idx$' || true; }
# Until the segment files stay unchanged for 10 s (merges ended).
settle() {
    local last="" same=0 now
    while [ "$same" -lt 10 ]; do
        now=$(ls "$WORK"/data/index/v*/ | md5sum)
        if [ "$now" = "$last" ]; then same=$((same + 1)); else same=0; last=$now; fi
        sleep 1
    done
}
start_plain
"$AFTER" import --server "$SERVER" "$WORK/items.jsonl" > "$WORK/import.log" 2>&1
until "$AFTER" search --server "$SERVER" --limit 1 --json "" | grep -q "\"total_hits\": *\"\?$ITEMS[^0-9]"; do sleep 2; done
settle
stop
# A start may merge what the last run left: restart until a start changes
# nothing, so both builds search the same segments.
for _ in 1 2 3 4 5; do
    before=$(ls "$WORK"/data/index/v*/ | md5sum)
    start_plain
    settle
    stop
    [ "$(ls "$WORK"/data/index/v*/ | md5sum)" = "$before" ] && break
done
echo "segments: $(segments), items: $ITEMS, corpus: $CORPUS"
for build in before after; do
    bin=$BEFORE; [ "$build" = after ] && bin=$AFTER
    export CALLGRIND_OUT="$WORK/callgrind.$build"
    valgrind --tool=callgrind --callgrind-out-file="$CALLGRIND_OUT.%p" \
        "$bin" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --analysis off \
        > "$WORK/server.$build.log" 2>&1 &
    PID=$!
    echo "== $build: $bin"
    "$PYTHON" "$HERE/search_instructions.py" "$PORT" "$PID" "$WORK/items.jsonl" "$CALLS"
    stop
    echo "segments after: $(segments)"
done
