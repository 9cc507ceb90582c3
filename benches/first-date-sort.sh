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
HERE=$(dirname "$0")
. "$HERE/dated-corpus.sh"
dated_corpus "$ITEMS"
import_all "$AFTER" "$ITEMS"
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
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
