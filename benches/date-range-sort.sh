#!/usr/bin/env bash
# Date-sorted searches with and without a filter's date range, two builds
# alternating on one data dir (BENCHMARKS.md "Date sorts within a date range").
#
#   PYTHON=.venv/bin/python benches/date-range-sort.sh BIN_BEFORE BIN_AFTER [ITEMS] [ROUNDS] [DATES]
#   (default 200000 items, 3 rounds, DATES `dated`; PYTHON needs grpcio and
#   grpcio-tools, as the venv tests/blackbox/run.sh makes)
#
# Imports ITEMS rows with random dates over 300 days (benches/random_items.py
# ... dated: dates in no order, so date sorts walk the segments in date
# order; with DATES `ordered`, dates rising with the rows) with BIN_AFTER,
# then per round, each build in turn: starts `serve --analysis off`, runs
# benches/date_range_latency.py (one client, 150 calls per case, the
# server's CPU time per call too) and stops it.
set -euo pipefail
BEFORE=${1:?usage: benches/date-range-sort.sh BIN_BEFORE BIN_AFTER [ITEMS] [ROUNDS] [DATES]}
AFTER=${2:?usage: benches/date-range-sort.sh BIN_BEFORE BIN_AFTER [ITEMS] [ROUNDS] [DATES]}
ITEMS=${3:-200000}
ROUNDS=${4:-3}
DATES=${5:-dated}
PYTHON=${PYTHON:-python3}
HERE=$(dirname "$0")
. "$HERE/dated-corpus.sh"
dated_corpus "$ITEMS" "$DATES"
import_all "$AFTER" "$ITEMS"
for round in $(seq "$ROUNDS"); do
    for build in before after; do
        bin=$BEFORE; [ "$build" = after ] && bin=$AFTER
        start "$bin"
        sleep 1
        echo "== round $round, $build"
        "$PYTHON" "$HERE/date_range_latency.py" "$PORT" 150 "$PID"
        stop
    done
done
