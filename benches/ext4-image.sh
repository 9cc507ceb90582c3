# Sourced by benches/read-only-fs.sh and benches/read-only-analysis.sh:
# a work dir, and in it an ext4 image loop-mounted with errors=remount-ro,
# so that `fail_fs` makes the kernel turn it read-only under open files (as
# on a disk error). `start_server ARGS...` starts $BIN serve with its data
# dir there. Everything is killed, unmounted and removed on exit.
#
#   mount_ext4 SIZE_MIB      sets WORK, MNT, DEV
#   start_server PORT ARGS   sets PID; exits with the log if it does not start
#   fail_fs
WORK=$(mktemp -d)
MNT="$WORK/mnt"
cleanup() {
  kill -9 "${PID:-}" 2>/dev/null || true
  sleep 0.5
  umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
mount_ext4() {
  mkdir "$MNT"
  truncate -s "${1}M" "$WORK/fs.img"
  mkfs.ext4 -q -F "$WORK/fs.img"
  mount -o loop,errors=remount-ro "$WORK/fs.img" "$MNT"
  DEV=$(basename "$(findmnt -n -o SOURCE "$MNT")")
}
start_server() {
  local port=$1
  shift
  "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$MNT/data" "$@" > "$WORK/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 600); do grep -q "listening addr" "$WORK/server.log" && return; sleep 0.1; done
  echo "the server did not start; its log:" >&2
  cat "$WORK/server.log" >&2
  exit 1
}
fail_fs() {
  echo 1 > "/sys/fs/ext4/$DEV/trigger_fs_error"
}
