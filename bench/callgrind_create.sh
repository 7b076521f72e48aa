#!/usr/bin/env bash
# User-space instructions per durable create (admin API, `?fill=true` with an empty body, as the
# bench's "durable creates" phase), counted by callgrind.
#
# Instruction counts do not depend on how busy the machine is, so this compares builds where
# creates/s swing with the host. valgrind hides SHA-NI, so the ETag's SHA-256 of each body runs in
# software here (Alcamine: ~160 000 instructions a create) where real CPUs use hardware: the line
# "without SHA-256" leaves it out.
#
# Usage: bench/callgrind_create.sh [API] (default alcamine). Env: BIN_DIR (target/release),
# SECONDS_MEASURED (15). Needs valgrind; builds nothing (run
# `cargo build --release --example loadgen_writes` first; with `CARGO_PROFILE_RELEASE_DEBUG=line-tables-only`
# for a profile that names source lines).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR=${BIN_DIR:-$ROOT/target/release}
API=${1:-alcamine}
SECS=${SECONDS_MEASURED:-15}
PORT=19380
for tool in valgrind callgrind_control callgrind_annotate curl; do
    command -v "$tool" >/dev/null || { echo "callgrind_create: $tool is missing" >&2; exit 1; }
done
[[ -x $BIN_DIR/examples/loadgen_writes ]] || { echo "callgrind_create: build examples/loadgen_writes first" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [[ -n ${KEEP:-} ]] && echo "kept $WORK" >&2 || rm -rf "$WORK"' EXIT

SESSIOND_LOG=warn TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$WORK/cg" \
    "$BIN_DIR/sessiond" serve --data-dir "$WORK/data" --listen 127.0.0.1:$PORT \
    --admin-listen 127.0.0.1:$((PORT + 1)) --admin-token bench >"$WORK/server.log" 2>&1 &
pid=$!
admin="http://127.0.0.1:$((PORT + 1))/admin/v1/$API"
tenant=
for _ in $(seq 200); do
    tenant=$(curl -sf -X POST -H 'Authorization: Bearer bench' -H 'content-type: application/json' \
        -d '{}' "$admin/tenants" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p') && [[ -n $tenant ]] && break
    sleep 0.2
done
[[ -n $tenant ]] || { echo "callgrind_create: the server did not start (see $WORK/server.log)" >&2; exit 1; }
load() {
    "$BIN_DIR/examples/loadgen_writes" --url "$admin/tenants/$tenant/sessions?fill=true" \
        --token bench --body '{}' --concurrency 16 --seconds "$1"
}
load 4 >/dev/null
callgrind_control -z "$pid" >/dev/null 2>&1
line=$(load "$SECS")
callgrind_control -d "$pid" >/dev/null 2>&1
sleep 1
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
creates=$(sed -n 's/.*created=\([0-9]*\).*/\1/p' <<<"$line")
((creates > 0)) || { echo "callgrind_create: no create acknowledged: $line" >&2; exit 1; }
total=$(awk '/^(summary|totals):/ {print $2; exit}' "$WORK/cg.1")
# Inclusive instructions of the software SHA-256 block function (0 if valgrind saw none). awk
# reads to the end: leaving early would kill callgrind_annotate with SIGPIPE, and pipefail this
# script.
sha=$(callgrind_annotate --inclusive=yes "$WORK/cg.1" 2>/dev/null |
    awk '/sha256::soft::compress \[/ && !found { gsub(",", "", $1); print $1; found = 1 }')
sha=${sha:-0}
echo "user-space instructions per $API create ($creates creates in ${SECS} s, callgrind):"
echo "  all: $((total / creates))"
echo "  without SHA-256: $(((total - sha) / creates))"
