#!/usr/bin/env bash
# Cache misses served from the OS page cache (warm), this tree's build against a base revision's,
# side by side in one run: for work on the miss path, whose cost a day's machine drift hides.
# One store is seeded (N sessions per api) and each build serves a copy of it with a small session
# cache (CACHE_MB), so that random GETs over all its ids are nearly all misses; the file is read
# (`cat`) right before each server starts, so misses find their pages in memory. Per round and
# build (the order alternates): wrk with bench/random_ids.lua for SECS at each of CONNS_LIST
# connection counts; printed: req/s, p50, p99, server CPU per request (utime + stime from
# /proc/PID/stat over the run ÷ requests). Then medians, and the median of the per-round ratios
# tree / base of the CPU per request.
#
# Usage: bench/miss_side_by_side.sh [BASE_REV]   (default HEAD: the last commit against the changes
#                                                  not yet committed)
# Env: APIS (all five: the GETs mix them), N (200000 per api), CACHE_MB (8), ROUNDS (3), SECS (8),
# CONNS_LIST ("64 1"), SERVER_CORE (0), LOAD_CORE (1), BIN_DIR, BASE_BIN (a release build of
# BASE_REV made earlier, instead of building it), BENCH_TMP, KEEP=1. Prints only; writes no report.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT=bench/miss_side_by_side.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
LOG_TAG=miss
usage() { sed -n '2,/^set -euo/p' "$ROOT/$SCRIPT" | sed '$d; s/^# \{0,1\}//'; }
case ${1:-} in -h | --help) usage; exit 0 ;; esac
BASE_REV=${1:-HEAD}
N=${N:-200000}
CACHE_MB=${CACHE_MB:-8}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-8}
read -r -a CONNS_LIST <<<"${CONNS_LIST:-64 1}"
read -r -a APIS <<<"${APIS:-salesnip opencx funnelfox alcamine anam}"
cd "$ROOT"
side_by_side_start miss-side-by-side "$BASE_REV"
declare -A BINARY=([tree]=$WORK/bin/sessiond [base]=$BASE_SD)
declare -A LABEL=([tree]=$tree [base]=$base_sha)

# One store, seeded by this tree (one tenant and key per api); each build serves a copy.
log "seeding $N sessions per api (${APIS[*]})"
SD=${BINARY[tree]}
for api in "${APIS[@]}"; do
    t=$("$SD" tenants create --api "$api" --data-dir "$WORK/seed")
    "$SD" seed --api "$api" --tenant "$t" --count "$N" --data-dir "$WORK/seed" >/dev/null 2>&1 || die "seed $api failed"
    KEY[$api]=$("$SD" keys create --api "$api" --tenant "$t" --data-dir "$WORK/seed" | sed -n 's/^key: *//p')
    [[ -n ${KEY[$api]} ]] || die "no key for $api"
done
"$SD" export --data-dir "$WORK/seed" -o "$WORK/export.ndjson" 2>/dev/null
ids_of "$WORK/export.ndjson" >"$WORK/ids.tsv"
rm "$WORK/export.ndjson"
request_list "$WORK/ids.tsv" >"$WORK/reqs.tsv"
cp -r "$WORK/seed" "$WORK/data-tree"
mv "$WORK/seed" "$WORK/data-base"
sync
first_api=${APIS[0]}
first_path="${VPATH[$first_api]}$(awk -F'\t' -v a="$first_api" '$1 == a { print $2; exit }' "$WORK/ids.tsv")"
PORT=18680
port_free "$PORT" || die "port $PORT is taken"

# run SIDE CONNS: one wrk run against the running server SD_PID; sets the W_* and S_* results.
run() {
    local out line
    sample_begin "$SD_PID"
    out=$(taskset -c "$LOAD_CORE" wrk -t1 -c"$2" --timeout 5s -d"${SECS}s" -s bench/random_ids.lua \
        "http://127.0.0.1:$PORT" -- "$WORK/reqs.tsv" 2>&1) || die "wrk failed: $out"
    sample_stop "$SD_PID"
    line=$(wrk_result "$out")
    wrk_parse "$line"
    sample_end "$W_REQS"
    ((W_BAD == 0)) || die "$1: $W_BAD errors or non-2xx answers"
}

printf '%s\n' "warm cache misses (--cache-mb $CACHE_MB, $((N * ${#APIS[@]})) sessions, random ids of ${APIS[*]}), $ROUNDS rounds of ${SECS} s; sides: ${LABEL[tree]}, ${LABEL[base]}"
printf '%5s %-14s %5s %9s %8s %8s %8s %6s\n' round server conns req/s p50_ms p99_ms cpu_us other%
sides=(tree base)
for ((r = 1; r <= ROUNDS; r++)); do
    declare -A ROUND=()
    for ((i = 0; i < 2; i++)); do
        side=${sides[$(((i + r) % 2))]}
        cat "$WORK/data-$side/sessiond.db" >/dev/null
        SESSIOND_LOG=warn TOKIO_WORKER_THREADS=$WORKERS taskset -c "$SERVER_CORE" "${BINARY[$side]}" serve \
            --data-dir "$WORK/data-$side" --cache-mb "$CACHE_MB" --no-prewarm \
            --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$((PORT + 1))" >"$WORK/$side.log" 2>&1 &
        SD_PID=$!
        PIDS+=("$SD_PID")
        wait_200 "$PORT" "$first_path" "$(cred "$first_api")" 60 "$SD_PID" ||
            die "$side did not answer 200 (see $WORK/$side.log)"
        for conns in "${CONNS_LIST[@]}"; do
            run "$side" "$conns"
            printf '%5s %-14s %5s %9.0f %8s %8s %8s %6s\n' "$r" "${LABEL[$side]}" "$conns" "$W_RPS" "$W_P50" \
                "$W_P99" "$S_CPU_US" "$S_OTHER0"
            add "$side.$conns.rps" "$W_RPS"
            add "$side.$conns.p99" "$W_P99"
            add "$side.$conns.cpu" "$S_CPU_US"
            ROUND[$side.$conns]=$S_CPU_US
        done
        stop_pid "$SD_PID"
    done
    for conns in "${CONNS_LIST[@]}"; do
        add "ratio.$conns" "$(calc '%.4f' "${ROUND[tree.$conns]} / ${ROUND[base.$conns]}")"
    done
done

echo
echo "medians (ratio: the median of the per-round ratios)"
printf '%5s %12s %12s %12s %12s %12s %12s %16s\n' conns "req/s tree" "req/s base" "p99 tree" "p99 base" \
    "cpu_us tree" "cpu_us base" "cpu tree/base"
for conns in "${CONNS_LIST[@]}"; do
    printf '%5s %12.0f %12.0f %12s %12s %12s %12s %16s\n' "$conns" "$(med "tree.$conns.rps")" \
        "$(med "base.$conns.rps")" "$(med "tree.$conns.p99")" "$(med "base.$conns.p99")" \
        "$(med "tree.$conns.cpu")" "$(med "base.$conns.cpu")" "$(medf '%.3f' "ratio.$conns")"
done
