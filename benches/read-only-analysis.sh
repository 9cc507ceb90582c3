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
WORK=$(mktemp -d)
MNT="$WORK/mnt"
cleanup() {
  kill -9 "${PID:-}" 2>/dev/null || true
  sleep 0.5
  umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir "$MNT"
truncate -s 512M "$WORK/fs.img"
mkfs.ext4 -q -F "$WORK/fs.img"
mount -o loop,errors=remount-ro "$WORK/fs.img" "$MNT"
DEV=$(basename "$(findmnt -n -o SOURCE "$MNT")")
PORT=$(python3 "$(dirname "$0")/random_items.py" "$WORK/items.jsonl" "$ITEMS" 400)
"$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$MNT/data" --analysis on --models-dir "$MODELS" > "$WORK/server.log" 2>&1 &
PID=$!
for _ in $(seq 600); do grep -q "listening addr" "$WORK/server.log" && break; sleep 0.1; done
grep -q "listening addr" "$WORK/server.log" || { echo "the server did not start; its log:" >&2; cat "$WORK/server.log" >&2; exit 1; }
SERVER="http://127.0.0.1:$PORT"
"$BIN" import --server "$SERVER" "$WORK/items.jsonl" > /dev/null 2>&1
sleep 3
echo 1 > "/sys/fs/ext4/$DEV/trigger_fs_error"
echo '{"id": "refused", "text": "refused on a read-only file system"}' > "$WORK/one.jsonl"
"$BIN" import --retries 0 --server "$SERVER" "$WORK/one.jsonl" > /dev/null 2>&1 || true
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
t0=$(cpu); l0=$(wc -l < "$WORK/server.log")
sleep 20
t1=$(cpu); l1=$(wc -l < "$WORK/server.log")
echo "server CPU over the 20 s after the refused write: $(echo "scale=2; ($t1 - $t0) / 100" | bc) s; log lines: $((l1 - l0))"
echo "search meanwhile: $("$BIN" search "" --server "$SERVER" 2>&1 | head -1)"
