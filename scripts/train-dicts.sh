#!/usr/bin/env bash
# Trains the per-api compression dictionaries of the SQLite store (src/store/dicts/*.zdict) from
# sessions made by `sessiond seed`. Run from anywhere; the dictionaries are committed.
#
# A dictionary is recorded in every database that used it, under its name (src/store/codec.rs):
# after retraining, give the changed ones new names there (`anam-2`), or existing stores refuse
# to open. The seed differs from the default one that tests and benchmarks use, so that their
# documents are not the training set.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PER_API=${PER_API:-5000}
SEED=${SEED:-20261201}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --bin sessiond --example train_dicts
bin=target/release
for api in salesnip opencx funnelfox alcamine anam; do
    tenant=$("$bin/sessiond" tenants create --api "$api" --data-dir "$work/store")
    "$bin/sessiond" seed --api "$api" --tenant "$tenant" --count "$PER_API" --seed "$SEED" \
        --data-dir "$work/store" >/dev/null
done
"$bin/sessiond" export --data-dir "$work/store" -o "$work/export.ndjson" >/dev/null
"$bin/examples/train_dicts" "$work/export.ndjson" src/store/dicts
