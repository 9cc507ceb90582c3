#!/usr/bin/env bash
# What a server does when the kernel turns its data dir's file system
# read-only under it (ext4 with errors=remount-ro after a disk error): how
# long reads are refused after the failed write, and what the read-only
# open of the store costs in memory (BENCHMARKS.md "A file system turned
# read-only"). Needs root, mkfs.ext4 and loop devices.
#
#   benches/read-only-fs.sh BIN [ITEMS] [TEXT_BYTES]   (default 1,000,000 items of 300 bytes)
#
# Writes ITEMS JSONL rows of random words (fixed seed), makes a sparse ext4
# image, loop-mounts it with errors=remount-ro, starts `BIN serve
# --analysis off` with its data dir there, imports the rows and waits until
# a match-all search counts them all. Then it triggers an ext4 error
# (/sys/fs/ext4/DEV/trigger_fs_error), sends one item (refused), and times
# until a search that reads items from the store answers again; it prints
# the server's resident memory before and after and its log line of the
# read-only open.
set -euo pipefail
BIN=${1:?usage: benches/read-only-fs.sh BIN [ITEMS] [TEXT_BYTES]}
BIN=$(realpath "$BIN")
ITEMS=${2:-1000000}
TEXT_BYTES=${3:-300}
. "$(dirname "$0")/ext4-image.sh"
PORT=$(python3 "$(dirname "$0")/random_items.py" "$WORK/items.jsonl" "$ITEMS" "$TEXT_BYTES")
mount_ext4 $(( ITEMS * TEXT_BYTES * 8 / 1048576 + 1024 ))
start_server "$PORT" --analysis off
now() { date +%s.%N; }
rss() { awk '/VmRSS/ {print int($2 / 1024) " MiB"}' "/proc/$PID/status"; }
SERVER="http://127.0.0.1:$PORT"
"$BIN" import --server "$SERVER" "$WORK/items.jsonl" > "$WORK/import.log" 2>&1
while [ "$("$BIN" search "" --server "$SERVER" 2>/dev/null | head -1 || true)" != "$ITEMS hits" ]; do sleep 1; done
# A warm working set, as a serving server has: the same searches as below.
for _ in $(seq 20); do "$BIN" search "" --server "$SERVER" --limit 100 > /dev/null; done
echo "items: $ITEMS of $TEXT_BYTES bytes; store file $(du -m "$MNT/data/store.redb" | cut -f1) MiB; server RSS before: $(rss)"
fail_fs
echo '{"id": "refused", "text": "refused on a read-only file system"}' > "$WORK/one.jsonl"
failed=$(now)
if "$BIN" import --retries 0 --server "$SERVER" "$WORK/one.jsonl" > "$WORK/refused.log" 2>&1; then
  echo "the write was not refused"; exit 1
fi
echo "the write: $(grep -a -o 'read-only[^"]*' "$WORK/refused.log" | head -1)"
tries=0
until "$BIN" search "" --server "$SERVER" --limit 100 > "$WORK/search.out" 2>&1; do
  tries=$((tries + 1))
  if [ "$(echo "$(now) - $failed > 600" | bc)" = 1 ]; then echo "reads still refused 600 s after the failure"; cat "$WORK/search.out"; exit 1; fi
  sleep 0.05
done
echo "reads answered again $(echo "$(now) - $failed" | bc) s after the refused write ($tries refused searches meanwhile): $(head -1 "$WORK/search.out")"
echo "server RSS after: $(rss)"
grep -a "file system refuses writes" "$WORK/server.log" | sed 's/^[^ ]* *//' | head -1
