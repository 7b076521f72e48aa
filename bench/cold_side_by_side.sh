#!/usr/bin/env bash
# Cache misses on a cold store, two ways side by side in one run. By default `sessiond serve` with
# and without the prewarm (it reads the SQLite store's session id index into memory in the
# background at start; `--no-prewarm` turns it off); with BASE_REV=REV, this tree's release build
# against REV's (both with the default flags). Rounds alternate the two; each run starts the server
# right after the OS page cache was dropped (a server just after a reboot), waits PREWARM_WAIT s,
# warms up for 3 s, then GETs random ids of the store with wrk over CONNS connection(s) for SECS s,
# server and wrk on separate cores. Printed per run: requests, p50, p99, max, what the server read
# from the disk per request (read_bytes of /proc/PID/io over the measured run), its CPU time per
# request (utime + stime of /proc/PID/stat over the measured run), its threads' context switches
# per request (voluntary and not, of /proc/PID/task/*/status over the measured run), its threads and peak RSS at the
# end; for reads handed to reader threads, how long they waited for a reader, ran on it and waited
# to be picked up again by the runtime (the store's `sessiond::store::handoff` debug lines); then
# the medians.
#
# Usage: bench/cold_side_by_side.sh [DATA_DIR]   (as root: it drops the page cache)
# Without DATA_DIR it builds a store of N sessions per api by seed, export and import into an empty
# dir (the bulk load writes the id index in one piece, as a restore does). With DATA_DIR it uses
# that store and adds a key to the first tenant of each api (the key is not revoked afterwards).
# Env: BASE_REV, N (200000 per api), ROUNDS (4), SECS (15), CONNS (1), PREWARM_WAIT (3), SAMPLE
# (ids, 300000), CACHE_MB (64), WORK (a new temporary dir), KEEP=1 (keep WORK), RATE (req/s: an
# open loop instead, examples/loadgen_fixed at that fixed rate over CONNS connections, each latency
# from the request's due time, over the ids of one api per credential header), CORES="A B" (the two
# sides are then this tree's build with the default flags on both, side A's server on core A and
# side B's on core B, the load on the other core: e.g. CORES="1 0" puts the server on the core that
# takes the disk's interrupts, which this script prints, against the core the other scripts use).
# wrk's percentiles are corrected for coordinated omission: a stall of the disk adds samples for the
# requests a steady client would have sent meanwhile, so max shows the stalls themselves.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
LOG_TAG=cold
BASE_REV=${BASE_REV:-}
N=${N:-200000}
ROUNDS=${ROUNDS:-4}
SECS=${SECS:-15}
CONNS=${CONNS:-1}
PREWARM_WAIT=${PREWARM_WAIT:-3}
SAMPLE=${SAMPLE:-300000}
CACHE_MB=${CACHE_MB:-64}
RATE=${RATE:-${OHA_RATE:-}} # OHA_RATE: its name until oha was replaced
WORK=${WORK:-$(mktemp -d)}
PORT=${PORT:-18480}
mkdir -p "$WORK"
SERVER=
cleanup() {
    [[ -n $SERVER ]] && kill "$SERVER" 2>/dev/null
    if [[ -n ${KEEP:-} ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
cd "$ROOT"
for tool in cargo curl taskset shuf; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[[ -w /proc/sys/vm/drop_caches ]] || die "dropping the page cache needs root: without it no run is cold"
apt_tool wrk
[[ -z $RATE ]] || apt_tool jq
(($(nproc) >= 2)) || die "needs 2 cores (server and wrk on separate ones)"

cargo build --release --quiet --bin sessiond ${RATE:+--example loadgen_fixed}
BIN=$WORK/sessiond
cp "${CARGO_TARGET_DIR:-target}/release/sessiond" "$BIN"
LOADGEN_FIXED=${CARGO_TARGET_DIR:-target}/release/examples/loadgen_fixed
# The two sides: a label, a binary and its serve flags each.
declare -A SERVER_CORE=()
if [[ -n ${CORES:-} ]]; then
    [[ -z $BASE_REV ]] || die "CORES compares one build on two cores: no BASE_REV with it"
    read -r core_a core_b <<<"$CORES"
    for c in "$core_a" "$core_b"; do [[ $c == [01] ]] || die "CORES: two cores of 0 and 1, e.g. CORES=\"1 0\""; done
    [[ $core_a != "$core_b" ]] || die "CORES: two different cores"
    A=("server-core-$core_a" "$BIN")
    B=("server-core-$core_b" "$BIN")
    SERVER_CORE[${A[0]}]=$core_a SERVER_CORE[${B[0]}]=$core_b
elif [[ -n $BASE_REV ]]; then
    base_sha=$(git rev-parse --short "$BASE_REV")
    build_rev "$base_sha" "$WORK/sessiond-$base_sha"
    A=(this-tree "$BIN")
    B=("$base_sha" "$WORK/sessiond-$base_sha")
else
    A=(prewarm "$BIN")
    B=(no-prewarm "$BIN" --no-prewarm)
fi

if (($# > 0)); then
    DATA=$1
    [[ -s $DATA/sessiond.db ]] || die "no store in $DATA (sessiond.db)"
else
    DATA=$WORK/store
    log "building a store of $((N * 5)) sessions (seed, export, import)"
    for api in salesnip opencx funnelfox alcamine anam; do
        t=$("$BIN" tenants create --api "$api" --data-dir "$WORK/gen")
        "$BIN" seed --api "$api" --tenant "$t" --count "$N" --seed 7 --data-dir "$WORK/gen" >/dev/null 2>&1
    done
    "$BIN" export --data-dir "$WORK/gen" -o "$WORK/all.ndjson" 2>/dev/null
    rm -rf "$WORK/gen"
    "$BIN" import --data-dir "$DATA" -i "$WORK/all.ndjson" 2>&1 | tail -1 >&2
    rm -f "$WORK/all.ndjson"
fi

# The request list: SAMPLE random ids of every api, each with a key of its tenant.
# (VPATH and HNAME: bench/lib.sh)
declare -A CRED=()
for api in "${!VPATH[@]}"; do
    tenant=$("$BIN" tenants list --api "$api" --data-dir "$DATA" | head -1 | awk '{ print $1 }')
    [[ -n $tenant ]] || continue
    key=$("$BIN" keys create --api "$api" --tenant "$tenant" --data-dir "$DATA" | sed -n 's/^key: *//p')
    if [[ ${HNAME[$api]} == Authorization ]]; then CRED[$api]="Bearer $key"; else CRED[$api]=$key; fi
done
log "sampling $SAMPLE ids (sessiond export, streamed)"
"$BIN" export --data-dir "$DATA" 2>"$WORK/export.log" | ids_of - | shuf -n "$SAMPLE" |
    while IFS=$'\t' read -r api id; do
        [[ -n ${CRED[$api]:-} ]] && printf '%s%s\t%s\t%s\n' "${VPATH[$api]}" "$id" "${HNAME[$api]}" "${CRED[$api]}"
    done >"$WORK/reqs.tsv"
[[ -s $WORK/reqs.tsv ]] || die "no session ids in the store"
# The open loop (RATE): loadgen_fixed sends one set of headers with every URL of its list, so the
# list holds the ids of the first api of each credential header, and every such header goes along.
OPEN_HEADERS=()
if [[ -n $RATE ]]; then
    declare -A SEEN=()
    : >"$WORK/urls.txt"
    for api in salesnip opencx funnelfox alcamine anam; do
        [[ -n ${CRED[$api]:-} && -z ${SEEN[${HNAME[$api]}]:-} ]] || continue
        SEEN[${HNAME[$api]}]=1
        OPEN_HEADERS+=(-H "${HNAME[$api]}: ${CRED[$api]}")
        awk -F'\t' -v p="${VPATH[$api]}" -v port="$PORT" 'index($1, p) == 1 { print "http://127.0.0.1:" port $1 }' "$WORK/reqs.tsv" >>"$WORK/urls.txt"
    done
    shuf -o "$WORK/urls.txt" "$WORK/urls.txt"
fi

TICK=$(getconf CLK_TCK) # cpu_ticks (bench/lib.sh) counts these
declare -A RESULTS=()
# run LABEL BINARY [serve flags...]: one cold run; its figures go to RESULTS[LABEL.*].
run() {
    local label=$1 bin=$2
    shift 2
    local core=${SERVER_CORE[$label]:-0}
    local load=$((1 - core))
    sync
    echo 3 >/proc/sys/vm/drop_caches
    SESSIOND_LOG=info,sessiond::store::handoff=debug taskset -c "$core" "$bin" serve --data-dir "$DATA" --cache-mb "$CACHE_MB" \
        --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$((PORT + 1))" "$@" >"$WORK/$label.r$round.log" 2>&1 &
    SERVER=$!
    until curl -s -o /dev/null "http://127.0.0.1:$PORT/"; do sleep 0.01; done
    sleep "$PREWARM_WAIT"
    local b0 b1 t0 t1 s0 s1 line n
    if [[ -n $RATE ]]; then
        # The warm-up's own seed: the measured run must not ask again for what it brought into
        # the cache (every measured run has seed 2, so both sides get the same requests).
        taskset -c "$load" "$LOADGEN_FIXED" --rate "$RATE" --seconds 3 --connections "$CONNS" --seed 1 \
            "${OPEN_HEADERS[@]}" --urls-from-file "$WORK/urls.txt" >/dev/null
        b0=$(disk_read_bytes "$SERVER")
        t0=$(cpu_ticks "$SERVER")
        s0=$(context_switches "$SERVER")
        # The same fields as bench/wrk_report.lua's RESULT line, from loadgen_fixed's JSON (ms);
        # its warm-up and drain are outside both the counts and the CPU window's requests.
        line=$(taskset -c "$load" "$LOADGEN_FIXED" --rate "$RATE" --seconds "$SECS" --connections "$CONNS" --seed 2 \
            "${OPEN_HEADERS[@]}" --urls-from-file "$WORK/urls.txt" | jq -r '"RESULT requests=\(.status["200"] // 0)"
                + " duration_us=\(.seconds * 1e6 | floor) p50_us=\(.latency_ms.p50 * 1e3 | floor)"
                + " p99_us=\(.latency_ms.p99 * 1e3 | floor) max_us=\(.latency_ms.max * 1e3 | floor)"
                + " errors=\(.errors + .unfinished) sent=\(.sent) stalled_ms=\(.stalls.total_ms * 1000 | round / 1000)"
                + " non2xx=\(.status | to_entries | map(select(.key != "200") | .value) | add // 0)"')
    else
        taskset -c "$load" wrk -t1 -c"$CONNS" -d3s -s bench/random_ids.lua "http://127.0.0.1:$PORT" -- "$WORK/reqs.tsv" >/dev/null
        b0=$(disk_read_bytes "$SERVER")
        t0=$(cpu_ticks "$SERVER")
        s0=$(context_switches "$SERVER")
        line=$(taskset -c "$load" wrk -t1 -c"$CONNS" -d"${SECS}s" -s bench/random_ids.lua \
            "http://127.0.0.1:$PORT" -- "$WORK/reqs.tsv" | grep '^RESULT')
    fi
    b1=$(disk_read_bytes "$SERVER")
    t1=$(cpu_ticks "$SERVER")
    s1=$(context_switches "$SERVER")
    local threads hwm
    threads=$(find "/proc/$SERVER/task" -mindepth 1 -maxdepth 1 | wc -l)
    hwm=$(calc '%.0f' "$(hwm_kb "$SERVER") / 1024")
    kill "$SERVER"
    wait "$SERVER" || true
    SERVER=
    n=$(kv requests "$line")
    (($(kv errors "$line") + $(kv non2xx "$line") == 0)) || die "$label: errors or non-2xx answers: $line"
    local rps kib cpu p50 p99 max prewarm
    rps=$(calc '%.0f' "$n * 1e6 / $(kv duration_us "$line")")
    kib=$(calc '%.1f' "($b1 - $b0) / 1024 / $n")
    # Per request the server got while CPU was counted: loadgen_fixed's warm-up is in that window.
    local sent
    sent=$(kv sent "$line")
    cpu=$(calc '%.1f' "($t1 - $t0) * 1e6 / $TICK / ${sent:-$n}")
    p50=$(calc '%.3f' "$(kv p50_us "$line") / 1000")
    p99=$(calc '%.3f' "$(kv p99_us "$line") / 1000")
    max=$(calc '%.1f' "$(kv max_us "$line") / 1000")
    prewarm=$(sed -n 's/.*session id index read into memory.*ms=\([0-9]*\).*/\1 ms/p' "$WORK/$label.r$round.log" | head -1)
    # The server's own time per request (its request log, `latency_us`), over the measured run's
    # last n requests: without the client's and the loopback's share.
    local sp50 sp99
    read -r sp50 sp99 _ < <(server_latency "$WORK/$label.r$round.log" "$n")
    # Reads handed to reader threads (a debug line each, from builds since session 18): how long
    # each waited for a reader, ran on it, and waited to be picked up again, over the measured run.
    local handed q99 r99 b99 q50 r50 b50
    handed=$(grep -c 'queue_us=' "$WORK/$label.r$round.log" || true)
    read -r q50 q99 r50 r99 b50 b99 < <(for f in queue_us read_us back_us; do
        # (No read handed over is no match: the awk prints "-" then.)
        { grep -o "$f=[0-9]*" "$WORK/$label.r$round.log" || true; } | tail -n "$n" | cut -d= -f2 | sort -n |
            awk '{ a[NR] = $1 } END { if (NR == 0) printf "- - "; else printf "%.3f %.3f ", a[int(NR * 0.5) + (NR < 2)] / 1000, a[int(NR * 0.99) + (NR < 100)] / 1000 }'
    done; echo)
    local switches
    switches=$(calc '%.2f' "($s1 - $s0) / ${sent:-$n}")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s | %s / %s | %s |\n' "$label" "$rps" "$p50" "$p99" "$max" "$sp50" "$sp99" "$kib" "$cpu" "$switches" "$threads" "$hwm" "${prewarm:--}" \
        "$(calc '%.2f' "$handed / ($n + 0.0001)")" "$q50" "$q99" "$r50" "$r99" "$b50" "$b99" "$(kv stalled_ms "$line" | grep . || echo -)"
    RESULTS[$label.rps]+=" $rps"
    RESULTS[$label.p50]+=" $p50"
    RESULTS[$label.p99]+=" $p99"
    RESULTS[$label.sp50]+=" $sp50"
    RESULTS[$label.sp99]+=" $sp99"
    RESULTS[$label.kib]+=" $kib"
    RESULTS[$label.cpu]+=" $cpu"
    RESULTS[$label.switches]+=" $switches"
    RESULTS[$label.hwm]+=" $hwm"
    if [[ $q50 != - ]]; then
        RESULTS[$label.q50]+=" $q50" RESULTS[$label.q99]+=" $q99" RESULTS[$label.r50]+=" $r50"
        RESULTS[$label.r99]+=" $r99" RESULTS[$label.b50]+=" $b50" RESULTS[$label.b99]+=" $b99"
    fi
}

sessions=$(sed -n 's/.*keys, \([0-9]*\) sessions.*/\1/p' "$WORK/export.log" | tail -1)
echo "store: $DATA ($sessions sessions, $(du -h "$DATA/sessiond.db" | cut -f1)), sessiond $(git rev-parse --short HEAD)$(git diff --quiet || echo ' with changes')"
echo "host: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores (the disk's interrupts on core $(disk_irq_cpus "$DATA")); $CONNS connection(s), $SECS s per run, --cache-mb $CACHE_MB${RATE:+; open loop: loadgen_fixed at $RATE req/s}"
echo
echo "| run | req/s | p50 ms | p99 ms | max ms | server p50 ms | server p99 ms | KiB read from disk per request | server CPU µs per request | context switches per request | threads | peak RSS MiB | prewarm took | reads handed to readers per request | wait for a reader p50 / p99 ms | on the reader p50 / p99 ms | back to the runtime p50 / p99 ms | generator stalled ms |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"
for round in $(seq 1 "$ROUNDS"); do
    if ((round % 2)); then
        run "${A[@]}"
        run "${B[@]}"
    else
        run "${B[@]}"
        run "${A[@]}"
    fi
done
echo
echo "Medians over $ROUNDS rounds (${A[0]} / ${B[0]}):"
for m in rps p50 p99 sp50 sp99 kib cpu switches hwm q50 q99 r50 r99 b50 b99; do
    [[ -n ${RESULTS[${A[0]}.$m]:-} && -n ${RESULTS[${B[0]}.$m]:-} ]] || continue
    # shellcheck disable=SC2086
    a=$(median ${RESULTS[${A[0]}.$m]})
    # shellcheck disable=SC2086
    b=$(median ${RESULTS[${B[0]}.$m]})
    if [[ $(calc '%d' "$b == 0") == 1 ]]; then ratio="n/a"; else ratio="$(calc '%.2f' "$a / $b") x"; fi
    echo "  $m: $a / $b = $ratio"
done
