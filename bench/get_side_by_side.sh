#!/usr/bin/env bash
# Cached GETs of this tree's build, a base revision's build and the baseline, side by side in one
# run: for read-path work, where a change moves sessiond's cost by a few percent and the machine's
# speed drifts by more than that between minutes. Each api's session is GET with one key over
# CONNS connections (wrk, one thread, on LOAD_CORE) from each server in turn (all pinned to
# SERVER_CORE, one tokio worker); the order rotates every round. Printed per run: req/s, p99 and
# server CPU per request (utime + stime from /proc/PID/stat over the run ÷ requests) and its
# user-space part (utime); then per api the medians, and the medians of the per-round ratios (each
# run against the other runs of its round, which the drift between rounds does not skew), and the
# medians of the user-space and kernel parts.
#
# Usage: bench/get_side_by_side.sh [BASE_REV]   (default HEAD: the last commit against the changes
#                                                 not yet committed)
# Env: APIS (all five), ROUNDS (5), SECS (5), CONNS (64), N (sessions seeded per api, 1000),
# SERVER_CORE (0), LOAD_CORE (1), BIN_DIR, BASE_BIN (a release build of BASE_REV made earlier: used
# instead of building it, which takes minutes), KEEP=1 (keep the work dir). Prints only; writes no
# report.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT=bench/get_side_by_side.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
LOG_TAG=get
usage() { sed -n '2,/^set -euo/p' "$ROOT/$SCRIPT" | sed '$d; s/^# \{0,1\}//'; }
case ${1:-} in -h | --help) usage; exit 0 ;; esac
BASE_REV=${1:-HEAD}
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-5}
N=${N:-1000}
read -r -a APIS <<<"${APIS:-salesnip opencx funnelfox alcamine anam}"
cd "$ROOT"
side_by_side_start get-side-by-side "$BASE_REV" baseline

declare -A SID=() # VPATH, HNAME, KEY and `cred`: bench/lib.sh

# One store, seeded by this tree; each sessiond serves a copy of its own.
SD=$WORK/bin/sessiond
for api in "${APIS[@]}"; do
    t=$("$SD" tenants create --api "$api" --data-dir "$WORK/seed")
    "$SD" seed --api "$api" --tenant "$t" --count "$N" --data-dir "$WORK/seed" >/dev/null 2>&1 || die "seed $api failed"
    KEY[$api]=$("$SD" keys create --api "$api" --tenant "$t" --data-dir "$WORK/seed" | sed -n 's/^key: *//p')
done
"$SD" export --data-dir "$WORK/seed" -o "$WORK/export.ndjson" 2>/dev/null
ids_of "$WORK/export.ndjson" >"$WORK/ids.tsv"
for api in "${APIS[@]}"; do
    SID[$api]=$(awk -F'\t' -v a="$api" '$1 == a { print $2; exit }' "$WORK/ids.tsv")
done
cp -r "$WORK/seed" "$WORK/data-tree"
cp -r "$WORK/seed" "$WORK/data-base"
sync

declare -A PORT=([tree]=18580 [base]=18590 [baseline]=18600) PID=()
for side in tree base baseline; do
    port_free "${PORT[$side]}" || die "port ${PORT[$side]} is taken"
done
start_sessiond() { # SIDE BINARY
    SESSIOND_LOG=warn TOKIO_WORKER_THREADS=$WORKERS taskset -c "$SERVER_CORE" "$2" serve \
        --data-dir "$WORK/data-$1" --listen "127.0.0.1:${PORT[$1]}" \
        --admin-listen "127.0.0.1:$((PORT[$1] + 1))" >"$WORK/$1.log" 2>&1 &
    PID[$1]=$!
    PIDS+=("$!")
}
start_sessiond tree "$SD"
start_sessiond base "$BASE_SD"
declare -A LABEL=([tree]=$tree [base]=$base_sha [baseline]=baseline)

run() { # SIDE API SECONDS: one wrk run; sets M_RPS M_P99 M_CPU_US M_USER_US
    local side=$1 api=$2 out line
    sample_begin "${PID[$side]}"
    out=$(taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNS" --timeout 5s -d"${3}s" -s bench/wrk_report.lua \
        -H "$(cred "$api")" "http://127.0.0.1:${PORT[$side]}${VPATH[$api]}${SID[$api]}" 2>&1) || die "wrk failed: $out"
    sample_stop "${PID[$side]}"
    line=$(wrk_result "$out")
    wrk_parse "$line"
    sample_end "$W_REQS"
    ((W_BAD == 0)) || die "$side: $W_BAD errors or non-2xx answers for $api"
    M_RPS=$(calc '%.0f' "$W_RPS") M_P99=$W_P99 M_CPU_US=$S_CPU_US M_USER_US=$S_USER_US
}

printf '%s\n' "cached GET, $CONNS connections, $ROUNDS rounds of ${SECS} s per server and api; sides: ${LABEL[tree]}, ${LABEL[base]}, baseline"
printf '%-9s %5s %-14s %9s %8s %8s %8s %6s\n' api round server req/s p99_ms cpu_us user_us other%
for api in "${APIS[@]}"; do
    path="${VPATH[$api]}${SID[$api]}"
    for side in tree base; do
        wait_200 "${PORT[$side]}" "$path" "$(cred "$api")" 60 "${PID[$side]}" || die "$side did not answer 200 (see $WORK/$side.log)"
    done
    curl -sf -o "$WORK/body.$api" -H "$(cred "$api")" "http://127.0.0.1:${PORT[tree]}$path"
    TOKIO_WORKER_THREADS=$WORKERS taskset -c "$SERVER_CORE" "$WORK/bin/baseline" \
        --listen "127.0.0.1:${PORT[baseline]}" --body "$WORK/body.$api" 2>>"$WORK/baseline.log" &
    PID[baseline]=$!
    PIDS+=("$!")
    wait_200 "${PORT[baseline]}" "$path" "$(cred "$api")" 30 || die "the baseline did not start"
    for side in tree base baseline; do run "$side" "$api" 2; done # warm-up
    sides=(tree base baseline)
    for ((r = 1; r <= ROUNDS; r++)); do
        declare -A ROUND=()
        for ((i = 0; i < 3; i++)); do
            side=${sides[$(((i + r) % 3))]}
            run "$side" "$api" "$SECS"
            printf '%-9s %5s %-14s %9s %8s %8s %8s %6s\n' "$api" "$r" "${LABEL[$side]}" "$M_RPS" "$M_P99" "$M_CPU_US" "$M_USER_US" "$S_OTHER0"
            add "$api.$side.rps" "$M_RPS"
            add "$api.$side.cpu" "$M_CPU_US"
            add "$api.$side.user" "$M_USER_US"
            add "$api.$side.kernel" "$(calc '%.2f' "$M_CPU_US - $M_USER_US")"
            ROUND[$side.rps]=$M_RPS ROUND[$side.cpu]=$M_CPU_US
        done
        add "$api.tree_base.cpu" "$(calc '%.4f' "${ROUND[tree.cpu]} / ${ROUND[base.cpu]}")"
        add "$api.tree_baseline.rps" "$(calc '%.4f' "${ROUND[tree.rps]} / ${ROUND[baseline.rps]}")"
        add "$api.base_baseline.rps" "$(calc '%.4f' "${ROUND[base.rps]} / ${ROUND[baseline.rps]}")"
        add "$api.tree_baseline.cpu" "$(calc '%.4f' "${ROUND[tree.cpu]} / ${ROUND[baseline.cpu]}")"
        add "$api.base_baseline.cpu" "$(calc '%.4f' "${ROUND[base.cpu]} / ${ROUND[baseline.cpu]}")"
    done
    stop_pid "${PID[baseline]}"
done

echo
echo "medians (ratios: medians of the per-round ratios)"
printf '%-9s %12s %12s %12s %14s %14s %14s %14s %14s\n' api "cpu_us tree" "cpu_us base" "cpu_us bline" \
    "cpu tree/base" "rps tree/bline" "rps base/bline" "cpu tree/bline" "cpu base/bline"
for api in "${APIS[@]}"; do
    printf '%-9s %12s %12s %12s %14s %14s %14s %14s %14s\n' "$api" "$(med "$api.tree.cpu")" "$(med "$api.base.cpu")" \
        "$(med "$api.baseline.cpu")" "$(medf '%.3f' "$api.tree_base.cpu")" "$(medf '%.3f' "$api.tree_baseline.rps")" \
        "$(medf '%.3f' "$api.base_baseline.rps")" "$(medf '%.3f' "$api.tree_baseline.cpu")" "$(medf '%.3f' "$api.base_baseline.cpu")"
done

echo
echo "server CPU µs per request split (medians): user space / kernel"
printf '%-9s %16s %16s %16s\n' api tree base baseline
for api in "${APIS[@]}"; do
    printf '%-9s %16s %16s %16s\n' "$api" "$(med "$api.tree.user") / $(med "$api.tree.kernel")" \
        "$(med "$api.base.user") / $(med "$api.base.kernel")" "$(med "$api.baseline.user") / $(med "$api.baseline.kernel")"
done
