#!/usr/bin/env bash
# Every test: the Rust suites (unit tests, the integration tests in tests/it), then the generated-client
# test against the binary they built. The PostgreSQL tests run when SESSIOND_TEST_POSTGRES_URL is set
# (.ci/run sets it); without it they are skipped with a note. Any failure fails the script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo test --all-targets
bash tests/clients/run.sh "${CARGO_TARGET_DIR:-target}/debug/sessiond"
