#!/usr/bin/env bash
# Trains the per-api compression dictionaries of the SQLite store (src/store/dicts/*.zdict) from
# sessions made by `sessiond seed`. Run from anywhere; the dictionaries are committed, and this
# script reproduces them byte for byte (fixed tenants, fixed seed, deterministic training).
#
# A dictionary is recorded in every database that used it, under its name (src/store/codec.rs):
# after changing the training, give the changed ones new names there (`anam-2`), or existing
# stores refuse to open. The seed differs from the default one that tests and benchmarks use, so
# that their documents are not the training set; the tenants are none of theirs either.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PER_API=${PER_API:-5000}
SEED=${SEED:-20261201}
declare -A TENANT=(
    [salesnip]=project_trainingdictionary001
    [opencx]=00000000-0000-4000-8000-0000000d1c71
    [funnelfox]=01KA0000000000000000000D1C
    [alcamine]=trainingdictionary000001
    [anam]=00000000-0000-4000-8000-0000000d1c75
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --bin sessiond --example train_dicts
bin=${CARGO_TARGET_DIR:-target}/release
for api in salesnip opencx funnelfox alcamine anam; do
    "$bin/sessiond" tenants create --api "$api" --id "${TENANT[$api]}" --data-dir "$work/store" >/dev/null
    "$bin/sessiond" seed --api "$api" --tenant "${TENANT[$api]}" --count "$PER_API" --seed "$SEED" \
        --data-dir "$work/store" >/dev/null
done
"$bin/sessiond" export --data-dir "$work/store" -o "$work/export.ndjson" >/dev/null
"$bin/examples/train_dicts" "$work/export.ndjson" src/store/dicts
