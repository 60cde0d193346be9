#!/usr/bin/env bash
# Webhook delivery under load (docs/BENCHMARKS.md, "Webhooks"). For each
# configuration of bench/run.sh (default, tuned), starts sesame on a fresh
# database and a receiver (bench/webhook-receiver.py, which notes each request's
# arrival time and the event's `timestamp`) and runs the load generator:
#   off   webhooks off: refresh, login-code (the figures bench/run.sh measures)
#   on    WEBHOOK_EVENTS default (user.created, …): refresh, login-code, mixed
#   all   WEBHOOK_EVENTS=*: mixed (every event is a delivery: the worker's limit),
#         then waits (at most 120 s) for the backlog to drain
# and reports deliveries per second and the delay from event to arrival (p50,
# p90, p99, max). Rate limits are off; email goes to the load generator's SMTP
# server. Raw JSON and a Markdown table go to bench/results/<UTC date-time>-webhooks/.
# Loopback only; every step is bounded in time.
#
#   bench/webhooks.sh [seconds per scenario (15)] [concurrency (16)]
#   SESAME_BIN=other/sesame bench/webhooks.sh …   measure another build of sesame
#   MODES=off bench/webhooks.sh …   only some modes (a build without webhooks: off)
#   NO_BUILD=1 bench/webhooks.sh …   use the release binaries already built
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-15}
clients=${2:-16}
PG_BASE=${PG_BASE:-$(scripts/pg.sh start)}
target=${CARGO_TARGET_DIR:-target}
if [ -n "${NO_BUILD:-}" ]; then
  : "${SESAME_BIN:=$target/release/sesame}" "${LOADGEN_BIN:=$target/release/examples/loadgen}"
fi
# shellcheck source=bench/lib.sh
. bench/lib.sh
release_bins sesame loadgen
out=bench/results/$(date -u +%Y-%m-%dT%H%MZ)-webhooks
mkdir -p "$out"

now_ns() { date +%s%N; }

python3 - "$out/machine.json" "$seconds" "$clients" \
  "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$measured" \
  "$(pg_setting server_version)" "$(pg_setting fsync)" "$(pg_setting synchronous_commit)" <<'PY'
import json, sys, datetime
keys = ["seconds", "concurrency", "nproc", "loadavg_before", "commit", "postgres", "fsync",
        "synchronous_commit"]
facts = dict(zip(keys, sys.argv[2:]))
facts["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
json.dump(facts, open(sys.argv[1], "w"), indent=2)
PY

secret=whsec_$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')

# run_mode CONFIG MODE SCENARIOS VAR=VALUE...: one sesame (and receiver) on a fresh database.
run_mode() {
  local config=$1 mode=$2 scenarios=$3; shift 3
  local name=$config-$mode db=sesame_bench_hooks port smtp hook server receiver started
  psql_ -d "$PG_BASE/postgres" -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
  port=$(free_port); smtp=$(free_port); hook=$(free_port)
  local hooks=()
  if [ "$mode" != off ]; then
    python3 bench/webhook-receiver.py "$hook" "$out/$name-received.jsonl" &
    receiver=$!
    local waited=0
    until curl -s -o /dev/null "http://127.0.0.1:$hook/"; do
      [ $waited -lt 100 ] || { echo "the receiver did not start" >&2; exit 1; }
      sleep 0.1; waited=$((waited + 1))
    done
    hooks=(WEBHOOK_URLS="http://127.0.0.1:$hook/hook" WEBHOOK_SECRET="$secret")
    [ "$mode" = all ] && hooks+=(WEBHOOK_EVENTS='*')
  fi
  env DATABASE_URL="$PG_BASE/$db" PORT="$port" ADMIN_PORT=0 EMAIL_PROVIDER=smtp \
    SMTP_URL="smtp://127.0.0.1:$smtp?tls=none" RATE_LIMIT_ENABLED=false \
    METRICS_FILE_PATH="$out/$name-audit.jsonl" "$@" "${hooks[@]}" \
    "$SESAME_BIN" serve >"$out/$name-server.log" 2>&1 &
  server=$!
  trap 'kill "$server" ${receiver:-} 2>/dev/null || true' EXIT
  started=$(date +%s)
  until curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; do
    [ $(( $(date +%s) - started )) -lt 30 ] || { echo "sesame did not start" >&2; exit 1; }
    sleep 0.05
  done
  for scenario in $scenarios; do
    local from to
    from=$(now_ns)
    "$LOADGEN_BIN" --url "http://127.0.0.1:$port" --smtp-port "$smtp" --scenario "$scenario" \
      --concurrency "$clients" --duration "$seconds" --json "$out/$name-$scenario.json" >/dev/null
    to=$(now_ns)
    local pending=0 drained
    if [ "$mode" != off ]; then
      pending=$(psql_ -d "$PG_BASE/$db" -c "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
      # Let the backlog drain (at most 120 s) before the next scenario.
      local waited=0
      while [ "$(psql_ -d "$PG_BASE/$db" -c "SELECT count(*) FROM webhook_deliveries WHERE status <> 'delivered'")" != 0 ] \
        && [ $waited -lt 1200 ]; do
        sleep 0.1; waited=$((waited + 1))
      done
    fi
    drained=$(now_ns)
    printf '{"fromNs": %s, "toNs": %s, "drainedNs": %s, "pendingAtEnd": %s, "notDelivered": %s, "deliveries": %s}\n' \
      "$from" "$to" "$drained" "$pending" \
      "$( [ "$mode" = off ] && echo 0 || psql_ -d "$PG_BASE/$db" -c "SELECT count(*) FROM webhook_deliveries WHERE status <> 'delivered'")" \
      "$( [ "$mode" = off ] && echo 0 || psql_ -d "$PG_BASE/$db" -c "SELECT count(*) FROM webhook_deliveries")" \
      >"$out/$name-$scenario-window.json"
  done
  kill "$server"; wait "$server" 2>/dev/null || true
  if [ -n "${receiver:-}" ]; then kill "$receiver"; wait "$receiver" 2>/dev/null || true; fi
  receiver=
  trap - EXIT
  rm -f "$out/$name-audit.jsonl" "$out/$name-audit.jsonl.pos"
}

for config in default tuned; do
  case $config in
    default) vars=(RUST_LOG=info METRICS_FORMAT=both) ;;
    tuned) vars=(RUST_LOG=warn METRICS_FORMAT=none LOG_FORMAT=json) ;;
  esac
  for mode in ${MODES:-off on all}; do
    case $mode in
      off) run_mode "$config" off "refresh login-code" "${vars[@]}" ;;
      on) run_mode "$config" on "refresh login-code mixed" "${vars[@]}" ;;
      all) run_mode "$config" all "mixed" "${vars[@]}" ;;
    esac
  done
done
cut -d' ' -f1-3 /proc/loadavg >"$out/loadavg-after.txt"

python3 bench/webhooks-report.py "$out" | tee "$out/tables.md"
gzip -9 "$out"/*-received.jsonl 2>/dev/null || true
echo "raw results: $out"
