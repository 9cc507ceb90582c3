#!/usr/bin/env bash
# The server's CPU while its file system is read-only and the background
# analysis has work it cannot save (BENCHMARKS.md "A file system turned
# read-only"). Needs root, mkfs.ext4, loop devices and the models
# (`python3 models/prepare.py --int8`), and bc.
#
#   benches/read-only-analysis.sh BIN [ITEMS]   (default 300 items of 400 bytes)
#
# Loop-mounts a sparse ext4 image with errors=remount-ro, starts `BIN serve
# --analysis on` with its data dir there, imports ITEMS rows, waits 3 s,
# triggers an ext4 error, sends one item (refused), then reads the server's
# CPU time (/proc/PID/stat) over the next 20 s and counts its log lines.
set -euo pipefail
BIN=$(realpath "${1:?usage: benches/read-only-analysis.sh BIN [ITEMS]}")
ITEMS=${2:-300}
MODELS=$(realpath "$(dirname "$0")/../models/cache")
. "$(dirname "$0")/ext4-image.sh"
mount_ext4 512
PORT=$(python3 "$(dirname "$0")/random_items.py" "$WORK/items.jsonl" "$ITEMS" 400)
start_server "$PORT" --analysis on --models-dir "$MODELS"
SERVER="http://127.0.0.1:$PORT"
"$BIN" import --server "$SERVER" "$WORK/items.jsonl" > /dev/null 2>&1
sleep 3
fail_fs
echo '{"id": "refused", "text": "refused on a read-only file system"}' > "$WORK/one.jsonl"
"$BIN" import --retries 0 --server "$SERVER" "$WORK/one.jsonl" > /dev/null 2>&1 || true
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
t0=$(cpu); l0=$(wc -l < "$WORK/server.log")
sleep 20
t1=$(cpu); l1=$(wc -l < "$WORK/server.log")
echo "server CPU over the 20 s after the refused write: $(echo "scale=2; ($t1 - $t0) / 100" | bc) s; log lines: $((l1 - l0))"
echo "search meanwhile: $("$BIN" search "" --server "$SERVER" 2>&1 | head -1)"
