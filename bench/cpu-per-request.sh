#!/usr/bin/env bash
# CPU time per request of sesame and of the floor of the stack (bench/floor.rs), under the
# same load: sesame (tuned configuration: RUST_LOG=warn, METRICS_FORMAT=none, rate limits
# off) and the floor run side by side on one fresh database; each measured run sends one
# scenario (`me` or `refresh`) at concurrency 16 to one of them, alternately, and reads the
# server process's user + system time from /proc before and after. Throughput on this
# machine depends on every process sharing its cores (PostgreSQL and the load generator
# too); CPU per request is what the server itself spends, so `sesame - floor` is sesame's
# own work per request. Prints a Markdown table; raw JSON goes to
# bench/results/<UTC date-time>-cpu/. Loopback only; every step is bounded in time.
#
#   bench/cpu-per-request.sh [scenario (me)] [seconds per run (10)] [rounds (2)]
#   SESAME_BIN=… FLOOR_BIN=… LOADGEN_BIN=… bench/cpu-per-request.sh …   prebuilt binaries
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:-me}
seconds=${2:-10}
rounds=${3:-2}
PG_BASE=${PG_BASE:-$(scripts/pg.sh start)}
PG_BASE=${PG_BASE%/}
# shellcheck source=bench/lib.sh
. bench/lib.sh
release_bins sesame floor loadgen
out=bench/results/$(date -u +%Y-%m-%dT%H%M%SZ)-cpu-$scenario
mkdir -p "$out"
db=sesame_bench_cpu
psql_ -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null

common=(DATABASE_URL="$PG_BASE/$db" ADMIN_PORT=0 RATE_LIMIT_ENABLED=false RUST_LOG=warn METRICS_FORMAT=none LOG_FORMAT=json)
port=$(free_port); smtp=$(free_port); floor_port=$(free_port)
env "${common[@]}" PORT="$port" EMAIL_PROVIDER=smtp SMTP_URL="smtp://127.0.0.1:$smtp?tls=none" \
  "$SESAME_BIN" serve >"$out/sesame-server.log" 2>&1 &
sesame=$!
PIDS+=("$sesame")
started=$(date +%s)
until curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; do
  [ $(($(date +%s) - started)) -lt 60 ] || { echo "sesame did not start" >&2; exit 1; }
  sleep 0.05
done
env "${common[@]}" FLOOR_PORT="$floor_port" "$FLOOR_BIN" >"$out/floor-server.log" 2>&1 &
floor=$!
PIDS+=("$floor")
until curl -sS -o /dev/null "http://127.0.0.1:$floor_port/auth/me" 2>/dev/null; do
  [ $(($(date +%s) - started)) -lt 60 ] || { echo "the floor did not start" >&2; exit 1; }
  sleep 0.05
done
# user + system time of a process, in clock ticks
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
for round in $(seq "$rounds"); do
  for who in sesame floor; do
    pid=$sesame measure=()
    [ "$who" = sesame ] || { pid=$floor; measure=(--measure-url "http://127.0.0.1:$floor_port"); }
    before=$(ticks "$pid")
    timeout $((seconds + 60)) "$LOADGEN_BIN" --url "http://127.0.0.1:$port" "${measure[@]}" --smtp-port "$smtp" \
      --scenario "$scenario" --concurrency 16 --duration "$seconds" --json "$out/$who-$round.json" >/dev/null
    echo "$(($(ticks "$pid") - before))" >"$out/$who-$round.ticks"
  done
done

python3 - "$out" "$scenario" "$rounds" "$hz" <<'PY' | tee "$out/tables.md"
import json, sys, pathlib
out, scenario, rounds, hz = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
print(f"| round | server | {scenario}/s | p99 ms | CPU µs per request |")
print("|---|---|---|---|---|")
for r in range(1, rounds + 1):
    for who in ("sesame", "floor"):
        j = json.loads((out / f"{who}-{r}.json").read_text())
        ticks = int((out / f"{who}-{r}.ticks").read_text())
        us = ticks / hz * 1e6 / j["requests"] if j["requests"] else float("nan")
        print(f'| {r} | {who} | {j["operationsPerSecond"]:.0f} | {j["latencyMs"]["p99"]} | {us:.0f} |')
PY
echo "raw results: $out"
