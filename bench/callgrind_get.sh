#!/usr/bin/env bash
# User-space instructions per cached GET, sessiond vs the baseline, counted by callgrind.
#
# Instruction counts do not depend on how busy the machine is, so this compares builds on a noisy
# machine where req/s and CPU time swing by ±15 %. It counts user space only (the kernel's TCP work,
# most of a request's cost, is the same for both servers), and valgrind hides SHA-NI, so sessiond's
# per-request SHA-256 of the key shows in software (~3 400 instructions) where real CPUs use hardware.
#
# Usage: bench/callgrind_get.sh [API] (default anam). Env: BIN_DIR (target/release), SECS (10: the
# measured run of wrk, 8 connections, after a 2 s warm-up; the instructions are divided by the
# requests wrk completed). Needs valgrind and wrk (the bench's generator); builds nothing (run
# `cargo build --release --example baseline` first).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR=${BIN_DIR:-$ROOT/target/release}
API=${1:-anam}
SECS=${SECS:-10}
PORT_SD=19280 PORT_BASE=19290
for tool in valgrind callgrind_control wrk curl; do
    command -v "$tool" >/dev/null || { echo "callgrind_get: $tool is missing" >&2; exit 1; }
done
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [[ -n ${KEEP:-} ]] && echo "kept $WORK" >&2 || rm -rf "$WORK"' EXIT

# The demo's printed curl line gives the URL and credential header of a stored session.
SESSIOND_LOG=warn "$BIN_DIR/sessiond" serve --demo --data-dir "$WORK/data" \
    --listen 127.0.0.1:$PORT_SD --admin-listen 127.0.0.1:$((PORT_SD + 1)) >"$WORK/demo.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "/$API/" "$WORK/demo.log" && break; sleep 0.1; done
line=$(grep "/$API/" "$WORK/demo.log" | head -1)
url=$(grep -o "http://[^ ]*" <<<"$line")
header=$(grep -o "\-H '[^']*'" <<<"$line" | sed "s/-H '//; s/'$//")
sleep 0.5
curl -sf "$url" -H "$header" >"$WORK/body"
kill "$pid"; wait "$pid" 2>/dev/null || true

# load SECONDS URL: GETs of URL over 8 connections for that long; prints how many were answered.
load() {
    wrk -t1 -c8 -d"$1"s -H "$header" -s "$ROOT/bench/wrk_report.lua" "$2" |
        sed -n 's/^RESULT requests=\([0-9]*\).*/\1/p'
}

# measure NAME URL COMMAND...: per-request instructions over SECS of requests after a warm-up.
measure() {
    local name=$1 target=$2
    shift 2
    SESSIOND_LOG=warn TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind \
        --callgrind-out-file="$WORK/cg.$name" "$@" >"$WORK/$name.log" 2>&1 &
    local p=$!
    for _ in $(seq 200); do curl -sf -o /dev/null "$target" -H "$header" && break; sleep 0.1; done
    load 2 "$target" >/dev/null
    callgrind_control -z "$p" >/dev/null 2>&1
    local n
    n=$(load "$SECS" "$target")
    callgrind_control -d "$p" >/dev/null 2>&1
    sleep 1
    kill -TERM "$p"; wait "$p" 2>/dev/null || true
    local total
    total=$(awk '/^(summary|totals):/ {print $2; exit}' "$WORK/cg.$name.1")
    echo "$name $((total / n)) ($n requests)"
}
echo "user-space instructions per cached $API GET (${SECS} s of wrk, callgrind):"
sd=$(measure sessiond "$url" "$BIN_DIR/sessiond" serve --data-dir "$WORK/data" \
    --listen 127.0.0.1:$PORT_SD --admin-listen 127.0.0.1:$((PORT_SD + 1)))
base=$(measure baseline "http://127.0.0.1:$PORT_BASE${url#http://127.0.0.1:$PORT_SD}" \
    "$BIN_DIR/examples/baseline" --listen 127.0.0.1:$PORT_BASE --body "$WORK/body")
echo "  $sd"
echo "  $base"
sd=${sd% (*} base=${base% (*}
awk -v s="${sd#* }" -v b="${base#* }" 'BEGIN { printf "  ratio sessiond / baseline: %.3f\n", s / b }'
