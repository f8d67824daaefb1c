#!/usr/bin/env bash
# `make demo`: start (or reuse) the demo service on embedded databases and its traffic
# generator, then tour the CLI. `make demo-stop` runs this with `stop`. Everything lives
# under .demo/ (git-ignored): the service's home, its CLI profile, the logs of both and
# the generator's pid; nothing touches your own config.
set -euo pipefail

BIN=${BIN:-.venv/bin}
DEMO_PORT=${DEMO_PORT:-8765}
DEMO_DIR=$(dirname "$MINERVA_HOME")
CLI="$BIN/minerva-ai"
TRAFFIC_PID="$DEMO_DIR/traffic.pid"
TRAFFIC_LOG="$DEMO_DIR/traffic.log"
RECEIVER_PORT=${DEMO_RECEIVER_PORT:-8766}
RECEIVER_PID="$DEMO_DIR/receiver.pid"
RECEIVER_LOG="$DEMO_DIR/webhooks.log"
RECEIVER_SECRET="$DEMO_DIR/webhook.secret"
# The demo's webhook receiver listens on loopback, which webhooks may target only when allowed.
export MINERVA_WEBHOOK_ALLOW=${MINERVA_WEBHOOK_ALLOW:-127.0.0.1}
mkdir -p "$DEMO_DIR"

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "minerva-ai $*"; "$CLI" "$@"; }

# The pid in a pid file, when the process it names is still the script we started.
helper_pid() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    case "$(ps -p "${pid:-0}" -o args= 2>/dev/null)" in
        *"$2"*) echo "$pid" ;;
        *) return 1 ;;
    esac
}
traffic_pid() { helper_pid "$TRAFFIC_PID" examples/traffic.py; }
receiver_pid() { helper_pid "$RECEIVER_PID" examples/webhook_receiver.py; }

stop_helper() {  # pid file, script, what it is
    local pid
    if pid=$(helper_pid "$1" "$2"); then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null || true
        echo "$3 stopped (pid $pid)"
    fi
    rm -f "$1"
}
stop_traffic() { stop_helper "$TRAFFIC_PID" examples/traffic.py "traffic generator"; }
stop_receiver() { stop_helper "$RECEIVER_PID" examples/webhook_receiver.py "webhook receiver"; }

start_receiver() {
    if receiver_pid >/dev/null; then
        return
    fi
    echo "starting the webhook receiver on http://127.0.0.1:$RECEIVER_PORT (log: $RECEIVER_LOG)"
    nohup "$BIN/python" examples/webhook_receiver.py --port "$RECEIVER_PORT" \
        --secret-file "$RECEIVER_SECRET" --duration 3600 >>"$RECEIVER_LOG" 2>&1 </dev/null &
    echo $! >"$RECEIVER_PID"
}

start_traffic() {
    echo "starting the traffic generator (log: $TRAFFIC_LOG)"
    nohup "$BIN/python" examples/traffic.py --duration "${DEMO_TRAFFIC_DURATION:-1h}" \
        >>"$TRAFFIC_LOG" 2>&1 </dev/null &
    echo $! >"$TRAFFIC_PID"
}

if [ "${1:-}" = "stop" ]; then
    stop_traffic
    stop_receiver
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
    if pid=$(traffic_pid); then
        echo "reusing the traffic generator already running (pid $pid)"
    else
        start_traffic
    fi
else
    stop_traffic
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
    start_traffic
fi

# Wait (boundedly) for the generator's first entries, so the tour has logs to show.
for _ in $(seq 1 100); do
    [ -n "$("$CLI" logs tail -n 1 -o jsonl 2>/dev/null)" ] && break
    sleep 0.2
done

run --version
run auth status
run features list
run features show photo-tagging
run features settings get photo-tagging -o yaml
run features settings set photo-tagging --set rate_limits.requests_per_minute=1500 --dry-run
run features settings set photo-tagging examples/settings/photo-tagging-rate-limits.yaml
run features settings history photo-tagging
run features list -o json --status maintenance
run features list --with-metrics
run features metrics support-summarizer --window 15m --by model
run logs tail -n 5
run logs tail --level warn+ -n 5

# Alerts: the traffic's incident fires support-summarizer's fallback-errors rule; its
# notifications go to the demo's webhook receiver.
start_receiver
if ! "$CLI" alerts webhooks list 2>/dev/null | grep -q demo-receiver; then
    if secret=$("$CLI" alerts webhooks add demo-receiver "http://127.0.0.1:$RECEIVER_PORT"); then
        printf '%s\n' "$secret" >"$RECEIVER_SECRET"
    fi
fi
for _ in $(seq 1 120); do  # the evaluator runs every 15 s
    [ -n "$("$CLI" alerts list --state all --limit 1 2>/dev/null)" ] && break
    sleep 1
done
run alerts rules list support-summarizer
run alerts list --state all
alert_id=$("$CLI" alerts list --state all --limit 1 2>/dev/null | cut -f1)
if [ -n "$alert_id" ]; then
    run alerts show "$alert_id"
    for _ in $(seq 1 30); do
        grep -q "alert\." "$RECEIVER_LOG" 2>/dev/null && break
        sleep 1
    done
    say "tail -3 $RECEIVER_LOG   # what the webhook receiver got"
    tail -3 "$RECEIVER_LOG"
else
    echo "(no alert yet: the traffic's next incident is within six minutes; see \`alerts watch\`)"
fi
run logs export -o csv --since 5m --out "$DEMO_DIR/logs.csv"
run test run photo-tagging --model suite-sim --input "a dog on a beach at sunset"
run test run support-summarizer --model suite-sim --prompt summarize \
    --var agent_name=Ada --var thread="The printer jams on page 2." -o json
run test history photo-tagging --limit 5
run test suite examples/suites/support-summarizer.yaml -j 4 --junit "$DEMO_DIR/suite-junit.xml"
run test runs list --feature support-summarizer --fingerprint live --limit 3
run load-test --scenario examples/scenarios/journey.yaml --users 20 --duration 8s \
    --threshold 'http_req_duration:p(95)<2000' --threshold 'ws_connecting:p(95)<2000'

# The plan's production-readiness-check, made general: examples/readiness.yaml. Coverage
# needs a `make test` first and the audit pip-audit (and the network): skipped without them.
skip=()
[ -f .coverage.xml ] || skip+=(--skip "test coverage")
"$BIN/python" -c "import pip_audit" 2>/dev/null || skip+=(--skip "security audit")
mkdir -p "$DEMO_DIR/dist" && rm -f "$DEMO_DIR"/dist/minerva_ai-*.whl
if ! "$BIN/pip" wheel --quiet --no-deps --no-build-isolation -w "$DEMO_DIR/dist" . \
    >"$DEMO_DIR/wheel.log" 2>&1; then
    echo "(the wheel did not build, see $DEMO_DIR/wheel.log: its size is not checked)"
    skip+=(--skip "bundle size")
fi
PYTHON="$BIN/python" WHEEL_DIR="$DEMO_DIR/dist" run readiness-check -c examples/readiness.yaml \
    "${skip[@]}" --report md="$DEMO_DIR/readiness.md"

cat <<TXT

The demo service keeps running at http://127.0.0.1:$DEMO_PORT with its data in $MINERVA_HOME,
and a traffic generator writes logs to it for an hour (log: $TRAFFIC_LOG); a webhook
receiver prints the alerts it is sent (log: $RECEIVER_LOG). The readiness report, as
Markdown for a CI summary: $DEMO_DIR/readiness.md.
Use it from this shell with:
    export MINERVA_CONFIG_DIR=$MINERVA_CONFIG_DIR MINERVA_PROFILE=local
    $CLI features list
    $CLI features top                 # every feature, live; q to quit
    $CLI logs tail -f                 # live logs; Ctrl-C to stop
    $CLI logs tail -f --level warn+   # only warnings and worse
    $CLI alerts watch                 # alert transitions, live
Stop them all with:  make demo-stop
TXT
