# bench/lib.sh: helpers shared by bench/run.sh, bench/postgres.sh and the side-by-side scripts
# (sourced, not run).
#
# The sourcing script sets ROOT (the repository, also the working dir), SCRIPT (its name, for usage
# errors) and LOG_TAG (log prefix) before sourcing, defines usage(), calls `bench_init` (the settings
# and paths both scripts share: cores, connections, BIN_DIR, WORK ...), sets QUIET_BUDGET, and adds
# the servers it starts to PIDS (stop_all stops them).
# shellcheck shell=bash disable=SC2034
# (SC2034: the variables set here are read by the scripts that source this file.)

# ---------------------------------------------------------------------------------------------
# Logging, arithmetic, medians

log() { printf '[%s %s] %s\n' "${LOG_TAG:-bench}" "$(date +%T)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
# calc FORMAT EXPR: floating-point arithmetic through awk.
calc() { awk "BEGIN { printf \"$1\", ($2) }"; }
median() {
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
# kv KEY LINE: the value of `KEY=value` in a `RESULT k=v ...` line.
kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
mib() { calc '%.1f' "$1 / 1024"; }
now_ns() { date +%s%N; }

# Measurements: add KEY VALUE records one more of KEY; med KEY is their median.
declare -A R=()
add() { R[$1]="${R[$1]:-} $2"; }
med() {
    # shellcheck disable=SC2086
    median ${R[$1]:-}
}
# medf FORMAT KEY: the median, formatted.
medf() { calc "$1" "$(med "$2")"; }
# medci KEY: a distribution-free confidence interval of the median of KEY's values, "LO–HI (C %)":
# of the n values sorted, the k-th smallest and the k-th largest, for the largest k whose
# coverage 1 - 2 P(Binomial(n, 1/2) < k) is at least 90 % (5 values: their range, 93.8 %; 15
# values: the 4th, 96.5 %). Assumes nothing of the values' distribution, only that the runs are
# independent. "n/a" below 5 values.
medci() {
    # shellcheck disable=SC2086
    printf '%s\n' ${R[$1]:-} | sort -g | awk '{ a[NR] = $1 } END {
        n = NR; if (n < 5) { print "n/a"; exit }
        # cdf[j] = P(Binomial(n, 1/2) <= j)
        p = 2 ^ -n; c = 0
        for (j = 0; j <= n; j++) { c += p; cdf[j] = c; p = p * (n - j) / (j + 1) }
        k = 1
        while (k + 1 <= n / 2 && 1 - 2 * cdf[k] >= 0.90) k++
        printf "%s–%s (%.1f %%)\n", a[k], a[n + 1 - k], 100 * (1 - 2 * cdf[k - 1]) }'
}

# ---------------------------------------------------------------------------------------------
# Per-api facts the scripts share: each api's session route on the combined listener and its
# credential header; `cred API` is the header line for the key in KEY[API] (set by the script).

declare -A VPATH=(
    [salesnip]=/salesnip/v1/sessions/
    [opencx]=/opencx/chat/sessions/
    [funnelfox]=/funnelfox/public/v1/sessions/
    [alcamine]=/alcamine/sessions/
    [anam]=/anam/v1/sessions/
)
declare -A HNAME=([salesnip]=X-Api-Key [opencx]=Authorization [funnelfox]=Fox-Secret
    [alcamine]=Authorization [anam]=Authorization)
declare -A KEY=()
cred() {
    if [[ ${HNAME[$1]} == Authorization ]]; then
        printf 'Authorization: Bearer %s' "${KEY[$1]}"
    else
        printf '%s: %s' "${HNAME[$1]}" "${KEY[$1]}"
    fi
}

# cred_value API: the value of the credential header `cred API` sends.
cred_value() {
    if [[ ${HNAME[$1]} == Authorization ]]; then printf 'Bearer %s' "${KEY[$1]}"; else printf '%s' "${KEY[$1]}"; fi
}

# request_list IDS_FILE > LIST: "path<TAB>header<TAB>value" lines for bench/random_ids.lua.
request_list() {
    local api
    local -a args=()
    for api in "${APIS[@]}"; do
        args+=(-v "p_$api=${VPATH[$api]}" -v "h_$api=${HNAME[$api]}" -v "v_$api=$(cred_value "$api")")
    done
    awk -F'\t' "${args[@]}" 'BEGIN { OFS = "\t" }
        { p["salesnip"] = p_salesnip; p["opencx"] = p_opencx; p["funnelfox"] = p_funnelfox; p["alcamine"] = p_alcamine; p["anam"] = p_anam
          h["salesnip"] = h_salesnip; h["opencx"] = h_opencx; h["funnelfox"] = h_funnelfox; h["alcamine"] = h_alcamine; h["anam"] = h_anam
          v["salesnip"] = v_salesnip; v["opencx"] = v_opencx; v["funnelfox"] = v_funnelfox; v["alcamine"] = v_alcamine; v["anam"] = v_anam
          print p[$1] $2, h[$1], v[$1] }' "$1"
}

# ---------------------------------------------------------------------------------------------
# Options and settings both scripts take

# common_arg ARGS...: handles an option both scripts take (--quick, --no-build, --keep, --out FILE,
# --help); sets ARG_SHIFT to the words it used, 0 when the option is not one of them.
common_arg() {
    ARG_SHIFT=1
    case $1 in
    --quick) MODE=quick ;;
    --no-build) BUILD=0 ;;
    --keep) KEEP=1 ;;
    --out)
        (($# >= 2)) || bad_arg "$1" "needs a file"
        OUT=$2
        ARG_SHIFT=2
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) ARG_SHIFT=0 ;;
    esac
}
# bad_arg ARG [WHAT]: the usage error for ARG (WHAT: what is wrong; "unknown argument").
bad_arg() {
    echo "$SCRIPT: ${2:-unknown argument}: $1" >&2
    usage >&2
    exit 2
}

# bench_init WORK-PREFIX: the settings and paths both scripts share; creates WORK.
bench_init() {
    SERVER_CORE=${SERVER_CORE:-0}
    LOAD_CORE=${LOAD_CORE:-1}
    WORKERS=${WORKERS:-1}
    CONNS=${CONNS:-64}
    QUIET_PCT=${QUIET_PCT:-25}
    # Where the release binaries are: BIN_DIR, else $CARGO_TARGET_DIR/release, else target/release.
    BIN_DIR=${BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
    [[ $BIN_DIR == /* ]] || BIN_DIR=$ROOT/$BIN_DIR
    BIN=$BIN_DIR/sessiond
    CLK_TCK=$(getconf CLK_TCK)
    ADMIN_TOKEN="bench-admin-$RANDOM$RANDOM$RANDOM"
    export PATH="$HOME/.cargo/bin:$PATH"
    STARTED_AT=$(date +%s)
    mkdir -p target/bench
    WORK=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/$1.XXXXXX")
}

# apt_tool NAME: installs the Debian package NAME (as root) when the command NAME is missing.
apt_tool() {
    command -v "$1" >/dev/null && return 0
    [[ $(id -u) == 0 ]] || die "$1 is missing: install it (Debian: apt-get install $1)"
    log "installing $1 (apt-get)"
    apt-get install -y -qq "$1" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$1" >/dev/null; }
}

# copy_bins FILE...: copies the binaries into $WORK/bin (a rebuild of the target dir during the run
# must not change, or delete, what runs) and prints nothing; the copies are $WORK/bin/NAME.
copy_bins() {
    local f
    for f in "$@"; do
        [[ -x $f ]] || die "$f is missing (build it, or point BIN_DIR at the binaries)"
    done
    mkdir -p "$WORK/bin"
    cp "$@" "$WORK/bin/"
}

# build_rev REV DEST: the release binary of git revision REV, built in a worktree with a target dir
# of its own under $WORK (removed afterwards), copied to DEST; kept if DEST exists already.
build_rev() {
    local rev=$1 dest=$2
    [[ -x $dest ]] && return 0
    log "building $rev (a worktree, its own target dir)"
    rm -rf "$WORK/rev-src"
    git worktree add --detach --quiet "$WORK/rev-src" "$rev"
    (cd "$WORK/rev-src" && CARGO_TARGET_DIR="$WORK/rev-target" cargo build --release --quiet)
    cp "$WORK/rev-target/release/sessiond" "$dest"
    git worktree remove --force "$WORK/rev-src"
    rm -rf "$WORK/rev-target"
}

# side_by_side_start NAME BASE_REV [EXAMPLE...]: the start of a script that compares this tree's
# build with BASE_REV's (the *_side_by_side.sh): bench_init NAME, a trap that stops the servers and
# removes WORK (kept with KEEP=1), the tools checked (wrk installed), then this tree built (with the
# EXAMPLEs, copied into $WORK/bin too) and BASE_REV's (or BASE_BIN, a build of it made earlier).
# Sets base_sha, tree (this tree's label: tree@SHA, or this-tree with uncommitted changes) and
# BASE_SD (the base binary).
side_by_side_start() {
    local name=$1 rev=$2 example
    shift 2
    bench_init "$name"
    trap side_by_side_cleanup EXIT
    (($(nproc) >= 2)) || die "needs 2 cores (servers and wrk on separate ones)"
    for tool in cargo curl taskset git; do
        command -v "$tool" >/dev/null || die "$tool is missing"
    done
    apt_tool wrk
    base_sha=$(git rev-parse --short "$rev")
    tree="this-tree"
    [[ -z $(git status --porcelain --untracked-files=no) ]] && tree="tree@$(git rev-parse --short HEAD)"
    log "building this tree and $base_sha (release)"
    local -a args=(--bin sessiond) bins=("$BIN")
    for example in "$@"; do
        args+=(--example "$example")
        bins+=("$BIN_DIR/examples/$example")
    done
    cargo_release "${args[@]}"
    copy_bins "${bins[@]}"
    BASE_SD=$WORK/bin/sessiond-$base_sha
    if [[ -n ${BASE_BIN:-} ]]; then
        [[ -x $BASE_BIN ]] || die "BASE_BIN=$BASE_BIN is no executable"
        cp "$BASE_BIN" "$BASE_SD"
    else
        build_rev "$base_sha" "$BASE_SD"
    fi
}
side_by_side_cleanup() {
    stop_all
    if [[ -n ${KEEP:-} ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}

# cargo_release [CARGO-BUILD-ARGS...]: `cargo build --release` into the target dir BIN_DIR belongs to.
# shellcheck disable=SC2120
cargo_release() {
    [[ $BIN_DIR == */release ]] || die "BIN_DIR=$BIN_DIR is no cargo target dir's release/: build by hand, then --no-build"
    CARGO_TARGET_DIR=${BIN_DIR%/release} cargo build --release --quiet "$@"
}

# ---------------------------------------------------------------------------------------------
# The machine

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# cpu_speed: MB/s of `sha256sum` over 256 MiB of zeros on the load core, the median of 3 — a fixed
# single-core workload, so runs on other days (this VM's speed has been seen to halve) compare.
cpu_speed() {
    local -a rates=()
    local t0 t1
    for _ in 1 2 3; do
        t0=$(date +%s%N)
        head -c 268435456 /dev/zero | taskset -c "${LOAD_CORE:-1}" sha256sum >/dev/null
        t1=$(date +%s%N)
        rates+=("$(calc '%.0f' "256 * 1.048576 / (($t1 - $t0) / 1e9)")")
    done
    median "${rates[@]}"
}
cpu_model() { awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo; }
mem_gib() { awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo; }
os_name() { (. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-?}"); }
wrk_version() { wrk --version 2>&1 | head -1 | cut -d' ' -f1-2; }
# page_reclaim: proactive reclaim of the OS page cache, as the kernel's DAMON interface shows it
# (a VM may page out file pages nobody has touched for a while, however much memory is free:
# then a store read a minute ago is not in memory any more).
page_reclaim() {
    local d ctx sch out=""
    for d in /sys/kernel/mm/damon/admin/kdamonds/[0-9]*; do
        [[ $(cat "$d/state" 2>/dev/null) == on ]] || continue
        for ctx in "$d"/contexts/[0-9]*; do
            for sch in "$ctx"/schemes/[0-9]*; do
                [[ $(cat "$sch/action" 2>/dev/null) == pageout ]] || continue
                local aggr age quota reset
                aggr=$(cat "$ctx/monitoring_attrs/intervals/aggr_us")
                age=$(cat "$sch/access_pattern/age/min")
                quota=$(cat "$sch/quotas/bytes")
                reset=$(cat "$sch/quotas/reset_interval_ms")
                out+="DAMON pages out memory idle for $(calc '%.0f' "$aggr * $age / 1e6") s or more"
                if [[ $(cat "$sch"/ops_filters/*/type 2>/dev/null) == *unmapped* ]]; then
                    out+=" (unmapped pages: the OS page cache)"
                fi
                if ((quota > 0 && reset > 0)); then
                    out+=", up to $(calc '%.0f' "$quota / 1048576 * 1000 / $reset") MiB/s"
                fi
            done
        done
    done
    echo "${out:-none seen (no DAMON pageout scheme on)}"
}

# machine_rows DATE: the rows of the machine table both reports start with (header included).
machine_rows() {
    echo "| | |"
    echo "|---|---|"
    echo "| date (UTC) | $1 |"
    echo "| cores (nproc) | $(nproc) |"
    echo "| CPU | $(cpu_model) |"
    echo "| memory | $(mem_gib) |"
    echo "| OS, kernel | $(os_name), $(uname -r) |"
    echo "| proactive page cache reclaim | $(page_reclaim) |"
}

# ---------------------------------------------------------------------------------------------
# /proc sampling

# Process CPU time (utime + stime of all threads) in clock ticks.
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
# tree_ticks PID: cpu_ticks of PID and of every process below it (a server that forks workers);
# a process that exits meanwhile counts 0.
tree_ticks() {
    local p x t=0
    for p in $(ps -e -o pid=,ppid= | awk -v root="$1" '{ kids[$2] = kids[$2] " " $1 }
        END { n = 1; q[1] = root
              for (i = 1; i <= n; i++) { m = split(kids[q[i]], k, " "); for (j = 1; j <= m; j++) q[++n] = k[j] }
              for (i = 1; i <= n; i++) print q[i] }'); do
        x=$(cpu_ticks "$p" 2>/dev/null) || x=0
        t=$((t + ${x:-0}))
    done
    echo "$t"
}
# user_ticks PID: the user-space part of cpu_ticks (utime of all PID's threads; children not counted).
user_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 }'; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
# disk_read_bytes PID: bytes the process PID (all its threads) has had read from the disk so far
# (read_bytes of /proc/PID/io; reads the OS page cache served do not count). 0 where unreadable.
disk_read_bytes() { awk '/^read_bytes:/ { print $2 }' "/proc/$1/io" 2>/dev/null | grep . || echo 0; }
# disk_irq_cpus PATH: the cores that take the interrupts of the disk holding PATH (the disk's MSI
# interrupt with the most of them so far, its effective affinity), e.g. "1"; "?" where not found.
# A read's completion runs there and wakes the reading thread from there.
disk_irq_cpus() {
    local dev disk dir irq best='?' most=0 n
    dev=$(findmnt -no SOURCE --target "$1" 2>/dev/null) || { echo '?'; return; }
    disk=$(lsblk -no PKNAME "$dev" 2>/dev/null | head -1)
    disk=${disk:-${dev#/dev/}}
    dir=$(readlink -f "/sys/block/$disk/device" 2>/dev/null) || { echo '?'; return; }
    while [[ $dir == /sys/devices/* && ! -d $dir/msi_irqs ]]; do dir=${dir%/*}; done
    [[ -d $dir/msi_irqs ]] || { echo '?'; return; }
    for irq in "$dir"/msi_irqs/*; do
        irq=${irq##*/}
        n=$(awk -v i="$irq:" '$1 == i { t = 0; for (c = 2; c <= NF && $c ~ /^[0-9]+$/; c++) t += $c; print t }' /proc/interrupts)
        if ((${n:-0} > most)); then
            most=$n
            best=$(cat "/proc/irq/$irq/effective_affinity_list" 2>/dev/null || echo '?')
        fi
    done
    echo "$best"
}
# context_switches PID: context switches of all of PID's threads so far, voluntary (a wait) and
# not (preempted), from /proc/PID/task/*/status (threads that ended no longer count).
context_switches() {
    cat /proc/"$1"/task/*/status 2>/dev/null |
        awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ { n += $2 } END { printf "%d\n", n }'
}
# resident FILE: how much of FILE is in the OS page cache, e.g. "5.1G of 5.2G" (fincore, util-linux).
resident() { echo "$(fincore --noheadings --output RES "$1" | tr -d " ") of $(du -h --apparent-size "$1" | cut -f1)"; }
# core_jiffies N: "total idle" jiffies of core N.
core_jiffies() {
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $5 + $6 }' /proc/stat
}

# sample_begin PID, sample_stop PID, sample_end REQUESTS: CPU of the server PID (and its children)
# and of the two cores around a run (sample_stop right when the run ends). sample_end sets S_CPU_US
# (server CPU µs per request), S_BUSY0 S_BUSY1 (% of the server's and the generator's core busy),
# S_OTHER0 (% of the server's core used by other processes: busy time that was not the server's)
# S_READ_KIB (KiB the server process read from the disk per request: what a cold store costs) and
# S_USER_US (of S_CPU_US, the server process's time in user space; the rest is the kernel's).
sample_begin() {
    S_T0=$(tree_ticks "$1")
    S_U0=$(user_ticks "$1")
    S_R0=$(disk_read_bytes "$1")
    read -r S_A0 S_I0 < <(core_jiffies "$SERVER_CORE")
    read -r S_B0 S_J0 < <(core_jiffies "$LOAD_CORE")
}
sample_stop() {
    S_T1=$(tree_ticks "$1")
    S_U1=$(user_ticks "$1")
    S_R1=$(disk_read_bytes "$1")
    read -r S_A1 S_I1 < <(core_jiffies "$SERVER_CORE")
    read -r S_B1 S_J1 < <(core_jiffies "$LOAD_CORE")
}
sample_end() {
    local t=$((S_T1 - S_T0)) a=$((S_A1 - S_A0)) i=$((S_I1 - S_I0)) b=$((S_B1 - S_B0)) j=$((S_J1 - S_J0))
    S_CPU_US=$(calc '%.2f' "$t * 1e6 / $CLK_TCK / ($1 > 0 ? $1 : 1)")
    S_BUSY0=$(calc '%.0f' "100 * ($a - $i) / ($a > 0 ? $a : 1)")
    S_BUSY1=$(calc '%.0f' "100 * ($b - $j) / ($b > 0 ? $b : 1)")
    S_OTHER0=$(calc '%.0f' "($a - $i - $t > 0) ? 100 * ($a - $i - $t) / ($a > 0 ? $a : 1) : 0")
    S_READ_KIB=$(calc '%.2f' "($S_R1 - $S_R0) / 1024 / ($1 > 0 ? $1 : 1)")
    S_USER_US=$(calc '%.2f' "($S_U1 - $S_U0) * 1e6 / $CLK_TCK / ($1 > 0 ? $1 : 1)")
}

# ---------------------------------------------------------------------------------------------
# A quiet machine

# busy_pct SECONDS: % of all cores busy over SECONDS (between runs our servers are idle, so this is
# other processes).
busy_pct() {
    local a b
    a=$(awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $5 + $6 }' /proc/stat)
    sleep "$1"
    b=$(awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $5 + $6 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[1] - x[1]
        printf "%.0f", (d > 0) ? 100 * (d - (y[2] - x[2])) / d : 0 }'
}

WAITED_TOTAL=0
# quiet_wait MAX: waits up to MAX s (and QUIET_BUDGET s over the whole run) for other processes to
# use < QUIET_PCT % of the cores; sets Q_BUSY (% just before the run) and Q_WAITED (s).
quiet_wait() {
    Q_WAITED=0
    Q_BUSY=$(busy_pct 1)
    while ((Q_BUSY >= QUIET_PCT && Q_WAITED < $1 && WAITED_TOTAL < QUIET_BUDGET)); do
        ((Q_WAITED == 0)) && log "machine busy ($Q_BUSY % of the cores used by other processes); waiting up to $1 s"
        Q_BUSY=$(busy_pct 5)
        Q_WAITED=$((Q_WAITED + 5))
        WAITED_TOTAL=$((WAITED_TOTAL + 5))
    done
}

# ---------------------------------------------------------------------------------------------
# Processes and ports

PIDS=()
# stop_all: stops every server in PIDS (for the EXIT trap).
stop_all() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
# stop_pid PID: stops one server and forgets it.
stop_pid() {
    local pid=$1 p keep=()
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do
        [[ $p == "$pid" ]] || keep+=("$p")
    done
    PIDS=("${keep[@]}")
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# http_status PORT PATH HEADER: the status code of one GET over bash's /dev/tcp (no fork, so it
# can poll every millisecond); empty when nothing listens.
http_status() {
    local line
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 0
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\nConnection: close\r\n\r\n' "$2" "$3" >&3
    IFS= read -r line <&3 || true
    exec 3<&- 3>&-
    line=${line#HTTP/1.1 }
    printf '%s' "${line%% *}"
}

# wait_200 PORT PATH HEADER TIMEOUT_S [PID [INTERVAL_S]]: polls (every INTERVAL_S, 0.001) until a
# GET answers 200; returns 1 on timeout, 2 as soon as PID (when given) has exited.
wait_200() {
    local deadline=$((SECONDS + $4)) s
    while ((SECONDS < deadline)); do
        [[ -z ${5:-} ]] || kill -0 "$5" 2>/dev/null || return 2
        s=$(http_status "$1" "$2" "$3" 2>/dev/null || true)
        [[ $s == 200 ]] && return 0
        sleep "${6:-0.001}"
    done
    return 1
}

# ---------------------------------------------------------------------------------------------
# wrk

# wrk_parse LINE: reads the `RESULT ...` line of bench/wrk_report.lua (or bench/random_ids.lua).
# Sets W_REQS W_RPS (unrounded) W_P50 W_P99 W_P999 (ms, 3 decimals) W_BAD (errors + non-2xx).
wrk_parse() {
    W_REQS=$(kv requests "$1")
    W_RPS=$(calc '%.9f' "$W_REQS / ($(kv duration_us "$1") / 1e6)")
    W_P50=$(calc '%.3f' "$(kv p50_us "$1") / 1000")
    W_P99=$(calc '%.3f' "$(kv p99_us "$1") / 1000")
    W_P999=$(calc '%.3f' "$(kv p999_us "$1") / 1000")
    W_BAD=$(($(kv errors "$1") + $(kv non2xx "$1")))
}

# server_latency LOG N: p50, p99 and p99.9 (ms) of the last N request lines (`latency_us=`) of a
# sessiond log.
server_latency() {
    grep -o 'latency_us=[0-9]*' "$1" | tail -n "$2" | cut -d= -f2 | sort -n |
        awk '{ a[NR] = $1 } END { if (NR == 0) { print "- - -"; exit }
            printf "%.3f %.3f %.3f\n", a[int(NR * 0.5) + (NR < 2)] / 1000, a[int(NR * 0.99) + (NR < 100)] / 1000, a[int(NR * 0.999) + (NR < 1000)] / 1000 }'
}

# wrk_result OUTPUT: the RESULT line of wrk's OUTPUT (dies when there is none).
wrk_result() { grep '^RESULT' <<<"$1" || die "wrk printed no result: $1"; }

# ---------------------------------------------------------------------------------------------
# ids

# ids_of NDJSON: "api<TAB>id" of every session in an export (lines start
# `{"kind":"session","api":"…","tenant":"…","session":{"id":"…"`; cut first: 10 M lines of ~1.3 KB).
ids_of() {
    cut -c1-400 "$1" | awk -F'"' '$2 == "kind" && $4 == "session" && $6 == "api" && $16 == "id" { print $8 "\t" $18 }'
}

# ---------------------------------------------------------------------------------------------
# Marked sections of a markdown report: `<!-- NAME:begin -->` … `<!-- NAME:end -->`

# write_section FILE NAME SECTION-FILE: replaces the text between NAME's markers (markers kept), or
# appends the markers and the section when FILE has none; creates FILE if needed. Nothing else in
# FILE changes.
write_section() {
    local dest=$1 b="<!-- $2:begin -->" e="<!-- $2:end -->" sec=$3 tmp
    mkdir -p "$(dirname "$dest")"
    tmp=$(mktemp "$WORK/out.XXXXXX")
    if [[ -f $dest ]] && grep -qxF "$b" "$dest" && grep -qxF "$e" "$dest"; then
        awk -v b="$b" -v e="$e" -v f="$sec" '
            $0 == b && !done { print; while ((getline l < f) > 0) print l; skip = 1; next }
            $0 == e && skip { skip = 0; done = 1 }
            !skip { print }' "$dest" >"$tmp"
    elif [[ -f $dest ]]; then
        {
            cat "$dest"
            [[ -z $(tail -c1 "$dest") ]] || echo
            echo
            echo "$b"
            cat "$sec"
            echo "$e"
        } >"$tmp"
    else
        {
            echo "# sessiond benchmarks"
            echo
            echo "$b"
            cat "$sec"
            echo "$e"
        } >"$tmp"
    fi
    cat "$tmp" >"$dest"
}

# section_of FILE NAME: NAME's marked block of FILE, markers included (nothing when absent).
section_of() {
    [[ -f $1 ]] || return 0
    sed -n "/^<!-- $2:begin -->\$/,/^<!-- $2:end -->\$/p" "$1"
}

# sections_except FILE NAME: every marked block of FILE but NAME's, markers included, each followed
# by a blank line.
sections_except() {
    [[ -f $1 ]] || return 0
    awk -v skip="$2" '/^<!-- [a-z0-9_-]+:begin -->$/ { name = $2; sub(/:begin$/, "", name); if (name != skip) keep = 1 }
         keep { print }
         keep && /^<!-- [a-z0-9_-]+:end -->$/ { keep = 0; print "" }' "$1"
}
