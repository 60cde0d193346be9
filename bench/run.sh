#!/usr/bin/env bash
# Reproduces the table in docs/BENCHMARKS.md: builds sesame and the load
# generator in release mode, starts sesame against a fresh database, measures
# start-up time and memory, runs every scenario, then the database's own limit
# (bench/pg-limit.sh), and prints the results as a Markdown table (raw JSON in
# bench/results/, git-ignored). Loopback only; every step is bounded in time.
#
#   bench/run.sh [seconds per scenario (15)] [concurrency (16)]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-15}
clients=${2:-16}
PG_BASE=${PG_BASE:-$(scripts/pg.sh start)}
export PG_BASE SESAME_BIN=${CARGO_TARGET_DIR:-target}/release/sesame
out=bench/results
mkdir -p "$out"

cargo build --release --locked --quiet --bin sesame --example loadgen
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
db=sesame_bench_http
psql -X -q -v ON_ERROR_STOP=1 -d "$PG_BASE/postgres" -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
DATABASE_URL=$PG_BASE/$db RUST_LOG=warn "$SESAME_BIN" migrate >/dev/null 2>&1

port=$(free_port); smtp=$(free_port)
started=$(date +%s%N)
DATABASE_URL=$PG_BASE/$db PORT=$port EMAIL_PROVIDER=smtp SMTP_URL="smtp://127.0.0.1:$smtp?tls=none" \
  RATE_LIMIT_ENABLED=false METRICS_FORMAT=none LOG_FORMAT=json RUST_LOG=warn \
  "$SESAME_BIN" serve >"$out/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
until curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; do
  [ $(( ($(date +%s%N) - started) / 1000000000 )) -lt 30 ] || { echo "sesame did not start" >&2; exit 1; }
  sleep 0.005
done
startup_ms=$(( ($(date +%s%N) - started) / 1000000 ))
sleep 1
rss() { awk -v k="$1" '$1 == k":" {printf "%.1f", $2 / 1024}' "/proc/$server/status"; }
idle_rss=$(rss VmRSS)

rows=()
for scenario in refresh me login-code login-link mixed; do
  "${CARGO_TARGET_DIR:-target}/release/examples/loadgen" --url "http://127.0.0.1:$port" --smtp-port "$smtp" --scenario "$scenario" \
    --concurrency "$clients" --duration "$seconds" --json "$out/$scenario.json" >/dev/null
  rows+=("$(python3 - "$out/$scenario.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["latencyMs"]
print(f'| {r["scenario"]} | {r["concurrency"]} | {r["operationsPerSecond"]:.0f} | {r["requestsPerSecond"]:.0f} | {l["p50"]} | {l["p90"]} | {l["p99"]} | {l["max"]} | {r["errors"]} |')
PY
)")
done
peak_rss=$(rss VmHWM)
kill "$server"; wait "$server" 2>/dev/null || true
trap - EXIT

limits=$(bench/pg-limit.sh "$clients" "$seconds")
refresh_tps=$(echo "$limits" | awk '/^refresh_tps/ {print $2}')
select_tps=$(echo "$limits" | awk '/^select_tps/ {print $2}')
refresh_ops=$(python3 -c "import json; print(json.load(open('$out/refresh.json'))['operationsPerSecond'])")
me_ops=$(python3 -c "import json; print(json.load(open('$out/me.json'))['operationsPerSecond'])")
login_ops=$(python3 -c "import json; print(json.load(open('$out/login-code.json'))['operationsPerSecond'])")

echo "## Run of $(date -u +%Y-%m-%d) — concurrency $clients, $seconds s per scenario"
echo
echo "| scenario | concurrency | operations/s | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "| measure | value |"
echo "|---|---|"
echo "| pgbench, sesame's refresh transaction (tps) | $refresh_tps |"
echo "| refresh / pgbench refresh | $(python3 -c "print(round($refresh_ops / $refresh_tps, 2))") |"
echo "| pgbench -S select-only (tps) | $select_tps |"
echo "| me / pgbench -S | $(python3 -c "print(round($me_ops / $select_tps, 2))") |"
echo "| login-code / refresh | $(python3 -c "print(round($login_ops / $refresh_ops, 2))") |"
echo "| start-up to /health 200 (migrations applied) | $startup_ms ms |"
echo "| idle RSS | $idle_rss MiB |"
echo "| peak RSS over all scenarios | $peak_rss MiB |"
