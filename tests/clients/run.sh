#!/usr/bin/env bash
# Third-party client compatibility test: generates a Python client from each vendor spec in
# specs/ with openapi-python-client, starts `sessiond serve --demo` on free loopback ports and
# runs tests/clients/test_generated_clients.py against it with only the base URL changed.
#
# Usage: tests/clients/run.sh [path/to/sessiond]
#   Without an argument it runs `cargo build` and uses target/debug/sessiond.
# Needs python3 >= 3.11 (the generated code requires it) and PyPI for the first run; the venv in
# target/clients-venv is reused afterwards.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

# Pinned tool chain. The generated code itself needs only httpx and attrs
# (openapi-python-client 0.29 emits datetime.fromisoformat, not python-dateutil).
GENERATOR_PIN="openapi-python-client==0.29.1"
RUNTIME_PINS=(httpx==0.28.1 attrs==26.1.0)
APIS=(salesnip opencx funnelfox alcamine anam)

VENV="$ROOT/target/clients-venv"
OUT="$ROOT/target/clients"

log() { printf '[clients] %s\n' "$*" >&2; }

# ---- the sessiond binary ----------------------------------------------------------------------
if [[ $# -ge 1 ]]; then
    BIN="$1"
else
    log "cargo build"
    cargo build --quiet
    BIN="$ROOT/target/debug/sessiond"
fi
if [[ ! -x "$BIN" ]]; then
    log "no executable sessiond at $BIN"
    exit 1
fi
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

# ---- the venv ---------------------------------------------------------------------------------
if ! python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    log "python3 >= 3.11 is required (the generated clients declare python ^3.11)"
    exit 1
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
fi
# With exact pins this is a no-op (and needs no network) once they are installed.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "$GENERATOR_PIN" "${RUNTIME_PINS[@]}"
# The generator's post-hooks (ruff) are looked up on PATH.
export PATH="$VENV/bin:$PATH"

# ---- generate one client per spec, fresh each run ---------------------------------------------
rm -rf "$OUT"
mkdir -p "$OUT"
PYPATH=""
for api in "${APIS[@]}"; do
    cfg="$OUT/$api.config.yaml"
    printf 'project_name_override: %s-client\npackage_name_override: %s_client\n' "$api" "$api" >"$cfg"
    log "generating $api client from specs/$api.yaml"
    # --fail-on-warning: a spec construct the generator had to skip fails the run.
    openapi-python-client generate \
        --path "$ROOT/specs/$api.yaml" \
        --config "$cfg" \
        --meta poetry \
        --output-path "$OUT/$api" \
        --fail-on-warning >"$OUT/$api.generate.log" 2>&1 || {
        cat "$OUT/$api.generate.log" >&2
        log "openapi-python-client failed on specs/$api.yaml"
        exit 1
    }
    PYPATH="${PYPATH:+$PYPATH:}$OUT/$api"
done
export PYTHONPATH="$PYPATH${PYTHONPATH:+:$PYTHONPATH}"

# ---- start sessiond --demo on ports of its own -----------------------------------------------
# It binds port 0 and logs the addresses it got: no other process can take a port between a
# choice made here and the server's bind.
DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sessiond-clients.XXXXXX")"
SERVER_LOG="$DATA_DIR/server.log"
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$DATA_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "starting sessiond on 127.0.0.1, on ports of its choosing"
ADMIN_TOKEN="clients-test-$RANDOM$RANDOM"
SESSIOND_LOG=info SESSIOND_ADMIN_TOKEN="$ADMIN_TOKEN" "$BIN" serve --demo --data-dir "$DATA_DIR/data" \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

# Bounded wait (~30 s, 0.2 s apart; early stop if the server died) for the log line with the
# addresses (a whole line: the server may be writing it as it is read), then for /healthz; prints
# "PUBLIC_PORT ADMIN_PORT".
wait_ready() {
    "$VENV/bin/python" - "$SERVER_LOG" "$SERVER_PID" <<'EOF'
import os, re, sys, time, urllib.request
log, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 30
ports = None
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        print("sessiond exited before becoming healthy", file=sys.stderr)
        sys.exit(1)
    if ports is None:
        with open(log, errors="replace") as f:
            m = re.search(r"sessiond listening public_addr=127\.0\.0\.1:(\d+) admin_addr=127\.0\.0\.1:(\d+)\n", f.read())
        if m:
            ports = m.groups()
    if ports is not None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[1]}/healthz", timeout=1) as r:
                if r.status == 200:
                    print(*ports)
                    sys.exit(0)
        except OSError:
            pass
    time.sleep(0.2)
print("sessiond did not answer /healthz within 30 s", file=sys.stderr)
sys.exit(1)
EOF
}
if ! ports="$(wait_ready)"; then
    log "sessiond did not come up; its log:"
    cat "$SERVER_LOG" >&2
    exit 1
fi
read -r PORT ADMIN_PORT <<<"$ports"
log "sessiond listens on 127.0.0.1:$PORT (admin 127.0.0.1:$ADMIN_PORT)"

# ---- run the test -----------------------------------------------------------------------------
status=0
SESSIOND_URL="http://127.0.0.1:$PORT" SESSIOND_ADMIN_URL="http://127.0.0.1:$ADMIN_PORT" \
    SESSIOND_ADMIN_TOKEN="$ADMIN_TOKEN" "$VENV/bin/python" "$ROOT/tests/clients/test_generated_clients.py" || status=$?
if [[ $status -ne 0 ]]; then
    log "client test failed (exit $status); sessiond log tail:"
    tail -n 40 "$SERVER_LOG" >&2 || true
fi
exit "$status"
