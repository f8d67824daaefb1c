#!/usr/bin/env bash
# `make demo`: start (or reuse) the demo service on embedded databases, then tour the CLI.
# `make demo-stop` runs this with `stop`. Everything lives under .demo/ (git-ignored):
# the service's home, its CLI profile and its log; nothing touches your own config.
set -euo pipefail

BIN=${BIN:-.venv/bin}
DEMO_PORT=${DEMO_PORT:-8765}
DEMO_DIR=$(dirname "$MINERVA_HOME")
CLI="$BIN/minerva-ai"
mkdir -p "$DEMO_DIR"

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "minerva-ai $*"; "$CLI" "$@"; }

if [ "${1:-}" = "stop" ]; then
    if "$CLI" server info >/dev/null 2>&1; then
        "$CLI" server stop
        echo "demo stopped"
    else
        echo "no demo running"
    fi
    exit 0
fi

if "$CLI" server info >/dev/null 2>&1 \
    && "$BIN/python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" \
        "http://127.0.0.1:$DEMO_PORT/api/health" 2>/dev/null; then
    echo "reusing the demo service already running on port $DEMO_PORT"
else
    "$CLI" server stop >/dev/null 2>&1 || true
    echo "starting the demo service on http://127.0.0.1:$DEMO_PORT (log: $DEMO_DIR/server.log)"
    nohup "$CLI" server start --demo --port "$DEMO_PORT" >>"$DEMO_DIR/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 600); do
        if "$BIN/python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" \
            "http://127.0.0.1:$DEMO_PORT/api/health" 2>/dev/null; then
            break
        fi
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "the demo service failed to start; its log says:" >&2
            tail -20 "$DEMO_DIR/server.log" >&2
            exit 1
        fi
        sleep 0.2
    done
fi

run --version
run auth status
run features list
run features show photo-tagging
run features settings get photo-tagging -o yaml
run features settings set photo-tagging --set rate_limits.requests_per_minute=1500 --dry-run
run features settings set photo-tagging examples/settings/photo-tagging-rate-limits.yaml
run features settings history photo-tagging
run features list -o json --status maintenance

cat <<TXT

The demo service keeps running at http://127.0.0.1:$DEMO_PORT with its data in $MINERVA_HOME.
Use it from this shell with:
    export MINERVA_CONFIG_DIR=$MINERVA_CONFIG_DIR
    $CLI features list
Stop it with:  make demo-stop
TXT
