# Sourced by benches/first-date-sort.sh and benches/date-range-sort.sh (and
# for its work dir and server helpers by benches/search-instructions.sh): a
# work dir holding ITEMS rows with random dates over 300 days
# (benches/random_items.py ... dated; or, with DATES `ordered`, dates rising
# with the rows), a free port, and helpers to start and stop a build's
# server on one data dir there. Removed on exit.
#
#   dated_corpus ITEMS [DATES]  sets WORK, PORT, SERVER
#   start BIN                sets PID; exits with the log if it does not start
#   stop                     stops the server and waits for it
#   import_all BIN ITEMS     imports the rows with BIN, waits until all are
#                            searchable, stops it, prints the segment count
WORK=$(mktemp -d)
trap 'kill -9 ${PID:-} 2>/dev/null || true; rm -rf "$WORK"' EXIT
dated_corpus() {
    PORT=$(python3 "$(dirname "${BASH_SOURCE[0]}")/random_items.py" "$WORK/items.jsonl" "$1" 150 "${2:-dated}")
    SERVER="http://127.0.0.1:$PORT"
}
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
import_all() {
    start "$1"
    "$1" import --server "$SERVER" "$WORK/items.jsonl" > "$WORK/import.log" 2>&1
    until "$1" search --server "$SERVER" --limit 1 --json "" | grep -q "\"total_hits\": *\"\?$2"; do sleep 1; done
    stop
    echo "segments: $(ls "$WORK"/data/index/v*/*.idx | wc -l), items: $2"
}
