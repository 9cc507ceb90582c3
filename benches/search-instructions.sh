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
# WORK (removed on exit), start BIN, stop, import_all BIN ITEMS.
. "$HERE/dated-corpus.sh"
case $CORPUS in
    random) PORT=$(python3 "$HERE/random_items.py" "$WORK/items.jsonl" "$ITEMS" 300) ;;
    sample) PORT=$(python3 "$HERE/sample_vocab_items.py" "$WORK/items.jsonl" "$ITEMS") ;;
    *) echo "$USAGE" >&2; exit 2 ;;
esac
SERVER="http://127.0.0.1:$PORT"
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
import_all "$AFTER" "$ITEMS"
# Merges go on after the import, and a start may merge what the last run
# left: restart until a start changes nothing, so both builds search the
# same segments.
for _ in 1 2 3 4 5; do
    before=$(ls "$WORK"/data/index/v*/ | md5sum)
    start "$AFTER"
    settle
    stop
    [ "$(ls "$WORK"/data/index/v*/ | md5sum)" = "$before" ] && break
done
echo "segments searched: $(segments), items: $ITEMS, corpus: $CORPUS"
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
