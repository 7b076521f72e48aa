#!/usr/bin/env bash
# `sessiond import` of one NDJSON file by two builds, side by side in one run: the working tree's
# release build and a base revision's, alternated, each into an empty data dir, the OS page cache
# dropped before each (when run as root). Prints wall time, sessions/s, CPU (user, sys), peak RSS
# and what each import left in its data dir (a clean import leaves only sessiond.db).
#
# Usage: bench/import_side_by_side.sh [BASE_REV] (default HEAD~1).
# Env: N (sessions per api, 200000: 5 apis, so 1 M in all), ROUNDS (alternations, 1),
# WORK (where the file, the base build and the data dirs go; a new temporary dir), KEEP=1 (keep
# WORK). The file is generated once by `sessiond seed` (one tenant per api, --seed 7) and `export`
# and reused when WORK is given again. Disk: ~1.4 KB of NDJSON and ~0.5 KB of store per session,
# twice (a store per build). 10 M sessions (N=2000000): ~14 GB file, ~25 min on a 2-core VM.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
LOG_TAG=import
BASE_REV=${1:-HEAD~1}
N=${N:-200000}
ROUNDS=${ROUNDS:-1}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"
cleanup() {
    if [[ -n ${KEEP:-} ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
cd "$ROOT"
for tool in cargo git lscpu /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "import_side_by_side: $tool is missing" >&2; exit 1; }
done
base_sha=$(git rev-parse --short "$BASE_REV")

echo "== building the working tree ($(git rev-parse --short HEAD)$(git diff --quiet || echo ', with changes'))" >&2
cargo build --release --quiet
cp "${CARGO_TARGET_DIR:-target}/release/sessiond" "$WORK/sessiond-new"
build_rev "$base_sha" "$WORK/sessiond-base-$base_sha"

file=$WORK/sessions-$N.ndjson
if [[ ! -s $file ]]; then
    echo "== generating $((N * 5)) sessions" >&2
    rm -rf "$WORK/gen"
    for api in salesnip opencx funnelfox alcamine anam; do
        t=$("$WORK/sessiond-new" tenants create --api "$api" --data-dir "$WORK/gen")
        "$WORK/sessiond-new" seed --api "$api" --tenant "$t" --count "$N" --seed 7 \
            --data-dir "$WORK/gen" 2>&1 | tail -1 >&2
    done
    "$WORK/sessiond-new" export --data-dir "$WORK/gen" -o "$file" 2>&1 | tail -1 >&2
    rm -rf "$WORK/gen"
fi
echo "file: $file ($(stat -c %s "$file") bytes, $((N * 5)) sessions)"
echo "host: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"

drop_caches() {
    sync
    if [[ -w /proc/sys/vm/drop_caches ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
}
for round in $(seq 1 "$ROUNDS"); do
    for build in "base-$base_sha" new; do
        dir=$WORK/data-$build
        rm -rf "$dir"
        drop_caches
        summary=$( { /usr/bin/time -f "cpu user %U s sys %S s, peak RSS %M KB" \
            "$WORK/sessiond-$build" import -i "$file" --data-dir "$dir" 2>&1 >/dev/null; } |
            grep -E '^(imported|cpu)' | paste -sd ';' -)
        left=$(cd "$dir" && ls | paste -sd ' ' -)
        echo "round $round $build: $summary; left: $left"
        rm -rf "$dir"
    done
done
