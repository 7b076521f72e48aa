#!/usr/bin/env bash
# bench/postgres.sh: sessiond on PostgreSQL next to SQLite (issue 4, item 5).
#
# Builds release, seeds the same sessions (anam and opencx) into a fresh PostgreSQL schema and into
# a SQLite data dir, and measures GETs with wrk: SQLite one node, PostgreSQL one node, PostgreSQL two
# nodes on the same schema, each with the session cache hit (fixed id, default cache) and missed
# (random ids, --cache-mb 0). Cases are alternated over several rounds and medians reported. Writes
# its section of docs/BENCHMARKS.md between <!-- postgres:begin --> and <!-- postgres:end --> and
# leaves the rest of the file alone. Every number in the section comes from this script.
# Run `bench/postgres.sh --help` for the options.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SCRIPT=bench/postgres.sh
LOG_TAG=pgbench
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
# The command as run, with the settings that came from the environment (a password in PG_URL masked).
COMMAND="bench/postgres.sh${*:+ $*}"
for v in BIN_DIR BENCH_TMP QUIET_BUDGET QUIET_PCT QUIET_MAX OTHER_WAIT WARM DUR ROUNDS PER_API CONNS WORKERS LOAD_CORE SERVER_CORE PG_URL; do
    if [[ -n ${!v+x} ]]; then
        # shellcheck disable=SC2001
        COMMAND="$v=$(sed 's#\(//[^:/@]*\):[^@]*@#\1:***@#' <<<"${!v}") $COMMAND"
    fi
done

usage() {
    cat <<'EOF'
usage: bench/postgres.sh [--quick] [--no-build] [--keep] [--out FILE]

  (default)   3 rounds x 10 s per case (6 cases, alternated), 10 000 sessions per api; ~5 minutes.
              Writes the PostgreSQL section of docs/BENCHMARKS.md (between its markers).
  --quick     smoke run: 1 round x 3 s, 2 000 sessions per api; writes
              target/bench/BENCHMARKS-postgres-quick.md.
  --no-build  use BIN_DIR/sessiond (target/release/sessiond) as it is.
  --keep      keep the temporary dir and the PostgreSQL schema (printed at the end).
  --out FILE  write the section into FILE instead.

Environment: PG_URL (postgres://postgres@127.0.0.1:5432/postgres; the user must be able to create
schemas), SERVER_CORE (0), LOAD_CORE (1), WORKERS (tokio worker threads per node, 1), CONNS (64),
PER_API (sessions per api), ROUNDS, DUR (seconds per run), WARM (seconds of warm-up per case),
OTHER_WAIT (seconds to wait for a running bench/run.sh to finish; 900), QUIET_MAX (seconds to wait
before a run for other processes to use < QUIET_PCT % of the cores; 30, quick 0), QUIET_PCT (25),
QUIET_BUDGET (at most that many seconds of such waiting in all; 60, quick 0), BENCH_TMP (parent of
the temporary dir; $TMPDIR or /tmp), BIN_DIR (where sessiond is, and where a build puts it:
$CARGO_TARGET_DIR/release or target/release).
EOF
}

MODE=default
OUT=""
BUILD=1
KEEP=0
while (($#)); do
    common_arg "$@"
    ((ARG_SHIFT)) || bad_arg "$1"
    shift "$ARG_SHIFT"
done

# ---------------------------------------------------------------------------------------------
# Settings

PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
bench_init sessiond-pgbench
OTHER_WAIT=${OTHER_WAIT:-900}
if [[ $MODE == quick ]]; then
    PER_API=${PER_API:-2000} ROUNDS=${ROUNDS:-1} DUR=${DUR:-3} WARM=${WARM:-1}
    QUIET_MAX=${QUIET_MAX:-0} QUIET_BUDGET=${QUIET_BUDGET:-0}
    OUT=${OUT:-target/bench/BENCHMARKS-postgres-quick.md}
else
    PER_API=${PER_API:-10000} ROUNDS=${ROUNDS:-3} DUR=${DUR:-10} WARM=${WARM:-2}
    QUIET_MAX=${QUIET_MAX:-30} QUIET_BUDGET=${QUIET_BUDGET:-60}
    OUT=${OUT:-docs/BENCHMARKS.md}
fi
((CONNS % 2 == 0)) || { echo "CONNS must be even (two nodes split them)" >&2; exit 2; }
APIS=(anam opencx)
declare -A VPATH=([anam]=/anam/v1/sessions/ [opencx]=/opencx/chat/sessions/)
BUILT_BIN=$BIN
SCHEMA="bench_pg_$(date +%s)_$RANDOM$RANDOM"
SCHEMA_MADE=0
# The query string of PG_URL (if any) gets the search path appended.
if [[ $PG_URL == *\?* ]]; then
    DSN="$PG_URL&options=-csearch_path%3D$SCHEMA"
else
    DSN="$PG_URL?options=-csearch_path%3D$SCHEMA"
fi

# ---------------------------------------------------------------------------------------------
# Helpers

# "pid ticks" of every PostgreSQL process (postmaster, backends, background workers).
pg_ticks() {
    local p
    for p in $(pgrep -x postgres || true); do
        [[ -r /proc/$p/stat ]] && printf '%s %s\n' "$p" "$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }')"
    done
}
# pg_delta BEFORE AFTER: ticks used between the two snapshots (processes started since count whole).
pg_delta() {
    awk 'NR == FNR { b[$1] = $2; next } $2 != "" { d += $2 - (($1 in b) ? b[$1] : 0) } END { print d + 0 }' "$1" "$2"
}

# quiet: waits for bench/run.sh (see wait_other_bench), then up to QUIET_MAX s (QUIET_BUDGET s over
# the whole run) for other processes to use < QUIET_PCT % of the cores (sets Q_BUSY, Q_WAITED).
quiet() {
    wait_other_bench
    quiet_wait "$QUIET_MAX"
}

cleanup() {
    stop_all
    if ((KEEP)); then
        log "kept $WORK and schema $SCHEMA"
    else
        if ((SCHEMA_MADE)); then
            psql -q -X "$PG_URL" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 ||
                log "could not drop schema $SCHEMA"
        fi
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Tools, build, another benchmark

install_tools() {
    apt_tool wrk
    local t
    for t in psql curl taskset; do
        command -v "$t" >/dev/null || die "$t is missing"
    done
}

build() {
    if ((BUILD)); then
        log "building release into $BIN_DIR (cargo build --release)"
        cargo_release
    fi
    copy_bins "$BIN"
    BIN=$WORK/bin/sessiond
}

# Two benchmarks on two cores measure each other: before the start and before every run, waits
# (polling every 30 s; OTHER_WAIT s over the whole run) while bench/run.sh is running.
other_running() { pgrep -f 'bench/[r]un\.sh' >/dev/null; }
OTHER_WAITED=0
OTHER_GAVE_UP=0
OTHER_OVERLAP=0
wait_other_bench() {
    local waited=0
    while other_running; do
        if ((OTHER_WAITED >= OTHER_WAIT)); then
            if ((!OTHER_GAVE_UP)); then
                log "bench/run.sh still running after waiting $OTHER_WAITED s in all; going ahead"
                OTHER_GAVE_UP=1
            fi
            return 0
        fi
        ((waited == 0)) && log "bench/run.sh is running; waiting for it (up to $((OTHER_WAIT - OTHER_WAITED)) s more)"
        sleep 30
        waited=$((waited + 30))
        OTHER_WAITED=$((OTHER_WAITED + 30))
    done
}
other_note() {
    if ((OTHER_OVERLAP)); then
        echo "**\`bench/run.sh\` was running during $OTHER_OVERLAP run(s)** (column \"run.sh\" below; waited $OTHER_WAITED s for it in all, at most $OTHER_WAIT s): those numbers are disturbed"
    elif ((OTHER_WAITED)); then
        echo "waited $OTHER_WAITED s for \`bench/run.sh\` to finish; it did not run during any measured run"
    else
        echo "\`bench/run.sh\` did not run during any measured run"
    fi
}

# ---------------------------------------------------------------------------------------------
# Data

declare -A TENANT=() PG_KEY=() SQ_KEY=()

# seed_into STORE-ARGS...: seeds PER_API sessions per api (tenants TENANT[api]); prints "api key" lines.
seed_into() {
    local api out key
    for api in "${APIS[@]}"; do
        out=$("$BIN" seed --api "$api" --tenant "${TENANT[$api]}" --count "$PER_API" "$@" 2>&1) ||
            die "seed $api failed: $out"
        log "seed $api ($*): $(tail -1 <<<"$out")"
        key=$("$BIN" keys create --api "$api" --tenant "${TENANT[$api]}" "$@" | sed -n 's/^key: *//p')
        [[ -n $key ]] || die "no key for $api"
        printf '%s %s\n' "$api" "$key"
    done
}

# request_list IDS KEYS-ARRAY-NAME > LIST: "path<TAB>Authorization<TAB>Bearer key" for random_ids.lua.
request_list() {
    local -n keys=$2
    awk -F'\t' -v pa="${VPATH[anam]}" -v po="${VPATH[opencx]}" -v ka="${keys[anam]}" -v ko="${keys[opencx]}" \
        'BEGIN { OFS = "\t" }
         $1 == "anam" { print pa $2, "Authorization", "Bearer " ka }
         $1 == "opencx" { print po $2, "Authorization", "Bearer " ko }' "$1"
}

# Lua scripts (in the temporary dir): the repository's reporters, plus a dump of wrk's latency
# histogram ("µs count" lines) to $WRK_HIST so the two wrk processes of a two-node run can be merged.
write_lua() {
    local name src
    for name in wrk_report random_ids; do
        src=$ROOT/bench/$name.lua
        [[ -f $src ]] || die "$src is missing"
        cat >"$WORK/$name.hist.lua" <<EOF
-- generated by bench/postgres.sh: $name.lua plus a latency histogram dump
dofile("$src")
local report = done
done = function(summary, latency, requests)
  report(summary, latency, requests)
  local path = os.getenv("WRK_HIST")
  if path and path ~= "" then
    local f = assert(io.open(path, "w"))
    for i = 1, #latency do
      local v, c = latency(i)
      f:write(string.format("%d %d\n", v, c))
    end
    f:close()
  end
end
EOF
    done
}

# percentile P HIST-FILES...: wrk's own percentile rule (rank = round(P/100 × count + 0.5)) over the
# merged histograms, in µs.
percentile() {
    local p=$1
    shift
    cat "$@" | awk '{ c[$1] += $2; n += $2 } END { for (v in c) print v, c[v], n }' | sort -n |
        awk -v p="$p" 'NR == 1 { rank = int(p / 100 * $3 + 0.5 + 0.5); if (rank < 1) rank = 1 }
                       { t += $2; if (t >= rank) { print $1; exit } }'
}

# ---------------------------------------------------------------------------------------------
# Servers

declare -A NODE_PID=() NODE_PORT=()

# start_node NAME PORT ADMIN-PORT CACHE-MB STORE-ARGS...: sessiond pinned to SERVER_CORE.
start_node() {
    local name=$1 port=$2 admin=$3 cache=$4
    shift 4
    port_free "$port" || die "port $port is in use"
    port_free "$admin" || die "port $admin is in use"
    mkdir -p "$WORK/node-$name"
    SESSIOND_LOG=warn TOKIO_WORKER_THREADS=$WORKERS SESSIOND_ADMIN_TOKEN=$ADMIN_TOKEN \
        taskset -c "$SERVER_CORE" "$BIN" serve "$@" \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" --cache-mb "$cache" \
        >>"$WORK/node-$name.log" 2>&1 &
    NODE_PID[$name]=$!
    NODE_PORT[$name]=$port
    PIDS+=("$!")
}

# wait_ready NAME PATH KEY: until the node answers 200 for PATH.
wait_ready() {
    local rc=0
    wait_200 "${NODE_PORT[$1]}" "$2" "Authorization: Bearer $3" 60 "${NODE_PID[$1]}" 0.1 || rc=$?
    ((rc != 2)) || die "node $1 exited (see $WORK/node-$1.log: $(tail -3 "$WORK/node-$1.log"))"
    ((rc == 0)) || die "node $1 did not answer 200 for $2 within 60 s"
}

# ---------------------------------------------------------------------------------------------
# Cases: "label|store|nodes|cache|node names|kind"

CASES=(
    "sq.hit|SQLite|1|hit|sq_hit|hit"
    "sq.miss|SQLite|1|miss|sq_miss|miss"
    "pg1.hit|PostgreSQL|1|hit|pg_hit1|hit"
    "pg1.miss|PostgreSQL|1|miss|pg_miss1|miss"
    "pg2.hit|PostgreSQL|2|hit|pg_hit1 pg_hit2|hit"
    "pg2.miss|PostgreSQL|2|miss|pg_miss1 pg_miss2|miss"
)
declare -A HIT_PATH=() HIT_KEY=() MISS_LIST=()

# run_case CASE-SPEC SECONDS: one measurement (one wrk per node on LOAD_CORE, connections split
# evenly, started together). Sets M_RPS M_P50 M_P99 (ms) M_CPU (sessiond µs/req, all nodes)
# M_PGCPU (PostgreSQL µs/req) M_REQS M_BAD M_LOAD (load average before).
run_case() {
    local label store nodes kind names name secs=$2 n i per
    IFS='|' read -r label store nodes _ names kind <<<"$1"
    read -r -a n <<<"$names"
    per=$((CONNS / ${#n[@]}))
    M_LOAD=$(loadavg)
    local -a c0=() c1=() wpids=()
    pg_ticks >"$WORK/pg0"
    for i in "${!n[@]}"; do c0[i]=$(cpu_ticks "${NODE_PID[${n[i]}]}"); done
    for i in "${!n[@]}"; do
        name=${n[i]}
        rm -f "$WORK/hist.$i" "$WORK/wrk.$i"
        if [[ $kind == hit ]]; then
            WRK_HIST=$WORK/hist.$i taskset -c "$LOAD_CORE" wrk -t1 -c"$per" -d"${secs}s" --timeout 5s \
                -s "$WORK/wrk_report.hist.lua" -H "Authorization: Bearer ${HIT_KEY[$store]}" \
                "http://127.0.0.1:${NODE_PORT[$name]}${HIT_PATH[$store]}" >"$WORK/wrk.$i" 2>&1 &
        else
            WRK_HIST=$WORK/hist.$i taskset -c "$LOAD_CORE" wrk -t1 -c"$per" -d"${secs}s" --timeout 5s \
                -s "$WORK/random_ids.hist.lua" "http://127.0.0.1:${NODE_PORT[$name]}" -- "${MISS_LIST[$store]}" \
                >"$WORK/wrk.$i" 2>&1 &
        fi
        wpids+=("$!")
    done
    for i in "${!wpids[@]}"; do
        wait "${wpids[i]}" || die "wrk failed ($label): $(cat "$WORK/wrk.$i")"
    done
    for i in "${!n[@]}"; do c1[i]=$(cpu_ticks "${NODE_PID[${n[i]}]}"); done
    pg_ticks >"$WORK/pg1"
    local reqs=0 rps=0 bad=0 ticks=0 line hists=()
    for i in "${!n[@]}"; do
        line=$(wrk_result "$(cat "$WORK/wrk.$i")") || die "wrk printed no result ($label)"
        [[ -s $WORK/hist.$i ]] || die "wrk wrote no latency histogram ($label)"
        wrk_parse "$line"
        reqs=$((reqs + W_REQS))
        rps=$(calc '%.3f' "$rps + $W_RPS")
        bad=$((bad + W_BAD))
        ticks=$((ticks + c1[i] - c0[i]))
        hists+=("$WORK/hist.$i")
    done
    M_REQS=$reqs
    M_BAD=$bad
    M_RPS=$(calc '%.0f' "$rps")
    M_P50=$(calc '%.3f' "$(percentile 50 "${hists[@]}") / 1000")
    M_P99=$(calc '%.3f' "$(percentile 99 "${hists[@]}") / 1000")
    M_CPU=$(calc '%.2f' "$ticks * 1e6 / $CLK_TCK / ($reqs > 0 ? $reqs : 1)")
    M_PGCPU=$(calc '%.2f' "$(pg_delta "$WORK/pg0" "$WORK/pg1") * 1e6 / $CLK_TCK / ($reqs > 0 ? $reqs : 1)")
}

# ---------------------------------------------------------------------------------------------
# Report

section() {
    local pgv label store nodes cache names kind l
    pgv=$(psql -X -At "$PG_URL" -c 'show server_version' 2>/dev/null || echo '?')
    echo "## PostgreSQL next to SQLite (issue 4)"
    echo ""
    echo "Generated by \`$COMMAND\` (from the repository root); do not edit by hand, re-run it. It writes only"
    echo "between the \`postgres:begin\`/\`postgres:end\` markers. Every number below is printed by that script in the same run."
    echo ""
    machine_rows "$START_DATE"
    echo "| PostgreSQL | $pgv, on the same machine (127.0.0.1:5432), not pinned: its processes share both cores |"
    echo "| load generator | $(wrk_version) |"
    echo "| sessiond | $GIT_REV |"
    echo "| load average at start (1/5/15 min) | $START_LOAD |"
    echo "| other benchmark | $(other_note) |"
    echo ""
    echo "### Method"
    echo ""
    echo "- Data: $PER_API sessions per api for anam and opencx (\`sessiond seed --tenant UUID --count $PER_API\`, same"
    echo "  tenants and seed in both stores), one key per tenant (\`sessiond keys create\`), seeded into a fresh PostgreSQL schema"
    echo "  (random name, dropped at the end) and into a SQLite data dir."
    echo "- Every node: \`sessiond serve\`, \`SESSIOND_LOG=warn\`, \`TOKIO_WORKER_THREADS=$WORKERS\`, pinned with \`taskset -c $SERVER_CORE\`."
    echo "  PostgreSQL nodes use \`--store 'postgres://…?options=-csearch_path%3D<schema>'\`."
    if [[ -n $CONN_NOTE ]]; then
        echo "  Pool maximum: deadpool's default, 2 × the cores the process may use (so 2 under \`taskset -c $SERVER_CORE\`). Connections per node"
        echo "  after the warm-ups (pool + the \`LISTEN\` connection, counted with \`ss\`): $CONN_NOTE."
    fi
    echo "- **Cache hit**: default cache (\`--cache-mb 256\`), one fixed anam session, static request (\`bench/wrk_report.lua\`)."
    echo "  **Cache miss**: \`--cache-mb 0\` (every GET reads the store; the key cache stays on), each request a random one of the"
    echo "  $((PER_API * ${#APIS[@]})) seeded anam and opencx ids (\`bench/random_ids.lua\`; building requests in Lua costs wrk"
    echo "  ~40 % of its throughput, so compare miss rows with miss rows)."
    echo "- **Two nodes**: two sessiond processes on the same schema, **both pinned to core $SERVER_CORE** (the same CPU budget as one"
    echo "  node, so the rows show what a second node costs, not more capacity). No load balancer: two wrk processes on core"
    echo "  $LOAD_CORE, started together with the same duration, one per node, $((CONNS / 2)) connections each ($CONNS in all, as for"
    echo "  one node). req/s = sum of both; p50/p99 from the two wrk latency histograms merged (wrk's percentile rule);"
    echo "  sessiond CPU = both processes."
    echo "- Load: \`wrk -t1 -c$CONNS --timeout 5s\` on core $LOAD_CORE. Each case gets a ${WARM} s warm-up (fills caches, opens pool"
    echo "  connections), then $ROUNDS round(s) of ${DUR} s per case, cases alternated (order reversed every other round); the table"
    echo "  shows medians. All six servers run for the whole benchmark (idle when not measured)."
    echo "- sessiond CPU µs/req: utime+stime of the node process(es) (\`/proc/PID/stat\`) over the run ÷ requests."
    echo "  PostgreSQL CPU µs/req: the same over every \`postgres\` process on the machine (so it would include any other"
    echo "  database work that happened meanwhile)."
    echo ""
    echo "### Results (medians)"
    echo ""
    echo "| store | nodes | cache | req/s | p50 ms | p99 ms | sessiond CPU µs/req | PostgreSQL CPU µs/req | load average before first run |"
    echo "|---|---:|---|---:|---:|---:|---:|---:|---|"
    for l in "${CASES[@]}"; do
        IFS='|' read -r label store nodes cache names kind <<<"$l"
        echo "| $store | $nodes | $cache | $(med "$label.rps") | $(med "$label.p50") | $(med "$label.p99") | $(med "$label.cpu") | $(med "$label.pgcpu") | ${FIRST_LOAD[$label]} |"
    done
    echo ""
    echo "Ratios (medians): PostgreSQL 1 node / SQLite, cache hit: $(calc '%.2f' "$(med pg1.hit.rps) / $(med sq.hit.rps)") × req/s;"
    echo "cache miss: $(calc '%.2f' "$(med pg1.miss.rps) / $(med sq.miss.rps)") × req/s, $(calc '%.2f' "$(med pg1.miss.cpu) / $(med sq.miss.cpu)") × sessiond CPU/req."
    echo "PostgreSQL 2 nodes / 1 node: cache hit $(calc '%.2f' "$(med pg2.hit.rps) / $(med pg1.hit.rps)") ×, cache miss $(calc '%.2f' "$(med pg2.miss.rps) / $(med pg1.miss.rps)") × req/s."
    echo ""
    echo "### Every run"
    echo ""
    echo "In run order. Before each run the script samples for 1 s how much of both cores other processes use (our"
    echo "servers are idle then) and waits, up to $QUIET_MAX s per run and $QUIET_BUDGET s in all, while that is ≥ $QUIET_PCT %. The machine is shared:"
    echo "a run with a low req/s or a high p99 next to a high load is likely another process's doing; medians damp it."
    echo "Column run.sh: whether \`bench/run.sh\` (the other benchmark) was running when the run started or ended."
    echo ""
    echo "| round | store | nodes | cache | req/s | p50 ms | p99 ms | sessiond CPU µs/req | PostgreSQL CPU µs/req | requests | load average before | other processes % of the cores before | waited s | run.sh |"
    echo "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"
    for l in "${RUNS_LOG[@]}"; do echo "$l"; done
    echo ""
    echo "Total run time: $(($(date +%s) - STARTED_AT)) s."
}

# ---------------------------------------------------------------------------------------------
# Main

install_tools
wait_other_bench
build
START_DATE=$(date -u '+%Y-%m-%d %H:%M')
GIT_REV="$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
DIRTY=$(git diff --name-only HEAD -- src Cargo.toml Cargo.lock migrations 2>/dev/null || true)
if [[ -n $DIRTY ]]; then
    GIT_REV+=" + uncommitted changes in the working tree ($(tr '\n' ' ' <<<"$DIRTY" | sed 's/ $//'), newest changed"
    # shellcheck disable=SC2012,SC2086 # DIRTY: the changed files, one a word
    GIT_REV+=" $(date -u -r "$(ls -t $DIRTY 2>/dev/null | head -1)" '+%H:%M:%S' 2>/dev/null || echo '?') UTC)"
fi
((BUILD)) || GIT_REV+="; \`--no-build\`: binary built $(date -u -r "$BUILT_BIN" '+%Y-%m-%d %H:%M:%S') UTC, not rebuilt for this run"
START_LOAD=$(loadavg)
log "mode $MODE, work dir $WORK, schema $SCHEMA, report $OUT"

psql -q -X -v ON_ERROR_STOP=1 "$PG_URL" -c "CREATE SCHEMA $SCHEMA" >/dev/null || die "cannot create schema $SCHEMA at $PG_URL"
SCHEMA_MADE=1

for api in "${APIS[@]}"; do TENANT[$api]=$(cat /proc/sys/kernel/random/uuid); done
seed_into --store "$DSN" >"$WORK/pg-keys"
seed_into --data-dir "$WORK/sqlite" >"$WORK/sq-keys"
while read -r api key; do PG_KEY[$api]=$key; done <"$WORK/pg-keys"
while read -r api key; do SQ_KEY[$api]=$key; done <"$WORK/sq-keys"
"$BIN" export --store "$DSN" -o "$WORK/pg.ndjson" 2>/dev/null
"$BIN" export --data-dir "$WORK/sqlite" -o "$WORK/sq.ndjson" 2>/dev/null
ids_of "$WORK/pg.ndjson" >"$WORK/pg-ids.tsv"
ids_of "$WORK/sq.ndjson" >"$WORK/sq-ids.tsv"
for f in pg sq; do
    count=$(wc -l <"$WORK/$f-ids.tsv")
    ((count == PER_API * ${#APIS[@]})) || die "$f export has $count sessions, expected $((PER_API * ${#APIS[@]}))"
done
request_list "$WORK/pg-ids.tsv" PG_KEY >"$WORK/pg-reqs.tsv"
request_list "$WORK/sq-ids.tsv" SQ_KEY >"$WORK/sq-reqs.tsv"
MISS_LIST[PostgreSQL]=$WORK/pg-reqs.tsv
MISS_LIST[SQLite]=$WORK/sq-reqs.tsv
HIT_PATH[PostgreSQL]=${VPATH[anam]}$(awk -F'\t' '$1 == "anam" { print $2; exit }' "$WORK/pg-ids.tsv")
HIT_PATH[SQLite]=${VPATH[anam]}$(awk -F'\t' '$1 == "anam" { print $2; exit }' "$WORK/sq-ids.tsv")
HIT_KEY[PostgreSQL]=${PG_KEY[anam]}
HIT_KEY[SQLite]=${SQ_KEY[anam]}
write_lua

start_node sq_hit 18180 18181 256 --data-dir "$WORK/sqlite"
start_node sq_miss 18182 18183 0 --data-dir "$WORK/sqlite"
start_node pg_hit1 18280 18281 256 --store "$DSN" --data-dir "$WORK/node-pg_hit1"
start_node pg_hit2 18380 18381 256 --store "$DSN" --data-dir "$WORK/node-pg_hit2"
start_node pg_miss1 18282 18283 0 --store "$DSN" --data-dir "$WORK/node-pg_miss1"
start_node pg_miss2 18382 18383 0 --store "$DSN" --data-dir "$WORK/node-pg_miss2"
for name in sq_hit sq_miss; do wait_ready "$name" "${HIT_PATH[SQLite]}" "${HIT_KEY[SQLite]}"; done
for name in pg_hit1 pg_hit2 pg_miss1 pg_miss2; do wait_ready "$name" "${HIT_PATH[PostgreSQL]}" "${HIT_KEY[PostgreSQL]}"; done
log "six nodes ready (sessiond on core $SERVER_CORE, wrk on core $LOAD_CORE)"

declare -A FIRST_LOAD=()
RUNS_LOG=()
for spec in "${CASES[@]}"; do
    run_case "$spec" "$WARM"
    ((M_BAD == 0)) || die "warm-up of ${spec%%|*} had $M_BAD errors or non-2xx answers"
    log "warm-up ${spec%%|*}: $M_RPS req/s"
done
# PostgreSQL connections each node holds after the warm-ups (its pool and its LISTEN connection).
CONN_NOTE=""
if command -v ss >/dev/null; then
    for name in pg_hit1 pg_hit2 pg_miss1 pg_miss2; do
        count=$(ss -Htnp state established '( dport = :5432 )' 2>/dev/null | grep -c "pid=${NODE_PID[$name]}," || true)
        d=${name#pg_}
        CONN_NOTE+="${CONN_NOTE:+, }${d%?} node ${d: -1}: $count"
    done
    log "PostgreSQL connections per node after the warm-ups: $CONN_NOTE"
fi
for ((r = 1; r <= ROUNDS; r++)); do
    order=("${CASES[@]}")
    if ((r % 2 == 0)); then
        order=()
        for ((i = ${#CASES[@]} - 1; i >= 0; i--)); do order+=("${CASES[i]}"); done
    fi
    for spec in "${order[@]}"; do
        IFS='|' read -r label store nodes cache _ _ <<<"$spec"
        quiet
        other_running && Q_OTHER=yes || Q_OTHER=no
        run_case "$spec" "$DUR"
        other_running && Q_OTHER=yes
        [[ $Q_OTHER == no ]] || OTHER_OVERLAP=$((OTHER_OVERLAP + 1))
        ((M_BAD == 0)) || die "$label run $r had $M_BAD errors or non-2xx answers"
        add "$label.rps" "$M_RPS"
        add "$label.p50" "$M_P50"
        add "$label.p99" "$M_P99"
        add "$label.cpu" "$M_CPU"
        add "$label.pgcpu" "$M_PGCPU"
        [[ -n ${FIRST_LOAD[$label]:-} ]] || FIRST_LOAD[$label]=$M_LOAD
        RUNS_LOG+=("| $r | $store | $nodes | $cache | $M_RPS | $M_P50 | $M_P99 | $M_CPU | $M_PGCPU | $M_REQS | $M_LOAD | $Q_BUSY | $Q_WAITED | $Q_OTHER |")
        log "round $r $label: $M_RPS req/s, p50 $M_P50 ms, p99 $M_P99 ms, sessiond $M_CPU µs/req, postgres $M_PGCPU µs/req (load $M_LOAD; others $Q_BUSY % of the cores before, waited $Q_WAITED s; bench/run.sh running: $Q_OTHER)"
    done
done

section >"$WORK/section.md"
cat "$WORK/section.md"
write_section "$OUT" postgres "$WORK/section.md"
log "wrote the PostgreSQL section of $OUT"
