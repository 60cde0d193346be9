#!/usr/bin/env bash
# Reproduces the tables in docs/BENCHMARKS.md: builds sesame and the load
# generator in release mode, then, for each configuration, starts sesame on a
# fresh, empty database (so start-up includes applying the migrations), measures
# start-up and memory, and runs every scenario; then the database's own limit
# (bench/pg-limit.sh). Configurations:
#   default  RUST_LOG=info, METRICS_FORMAT=both (console and JSON Lines file on)
#   tuned    RUST_LOG=warn, METRICS_FORMAT=none (only the audit table)
# Rate limits are off in both (all load comes from one IP). Prints Markdown
# tables; the raw JSON of every scenario, the machine's facts (date, nproc,
# load average, PostgreSQL settings, commit) and the tables go to
# bench/results/<UTC date-time>/ (server logs there are git-ignored).
# Loopback only; every step is bounded in time.
#
#   bench/run.sh [seconds per scenario (15)] [concurrency (16)]
#   SESAME_BIN=other/sesame bench/run.sh …   measure another build of sesame
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-15}
clients=${2:-16}
PG_BASE=${PG_BASE:-$(scripts/pg.sh start)}
target=${CARGO_TARGET_DIR:-target}
if [ -n "${SESAME_BIN:-}" ]; then
  measured="binary $SESAME_BIN"
else
  SESAME_BIN=$target/release/sesame
  measured="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+changes')"
fi
export PG_BASE SESAME_BIN
out=bench/results/$(date -u +%Y-%m-%dT%H%MZ)
mkdir -p "$out"

cargo build --release --locked --quiet --bin sesame --example loadgen
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
psql_() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$PG_BASE/postgres" "$@"; }
pg_setting() { psql_ -c "SHOW $1"; }

python3 - "$out/machine.json" "$seconds" "$clients" \
  "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$measured" \
  "$(pg_setting server_version)" "$(pg_setting fsync)" "$(pg_setting synchronous_commit)" \
  "$(pg_setting shared_buffers)" "$(pg_setting max_connections)" <<'PY'
import json, sys, datetime
keys = ["seconds", "concurrency", "nproc", "loadavg_before", "commit", "postgres", "fsync",
        "synchronous_commit", "shared_buffers", "max_connections"]
facts = dict(zip(keys, sys.argv[2:]))
facts["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
json.dump(facts, open(sys.argv[1], "w"), indent=2)
PY

# run_config NAME VAR=VALUE...: one sesame on a fresh database, every scenario against it.
run_config() {
  local name=$1; shift
  local db=sesame_bench_$name port smtp started server
  psql_ -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
  port=$(free_port); smtp=$(free_port)
  started=$(date +%s%N)
  env DATABASE_URL="$PG_BASE/$db" PORT="$port" ADMIN_PORT=0 EMAIL_PROVIDER=smtp SMTP_URL="smtp://127.0.0.1:$smtp?tls=none" \
    RATE_LIMIT_ENABLED=false METRICS_FILE_PATH="$out/$name-audit.jsonl" "$@" \
    "$SESAME_BIN" serve >"$out/$name-server.log" 2>&1 &
  server=$!
  trap 'kill "$server" 2>/dev/null || true' EXIT
  until curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; do
    [ $(( ($(date +%s%N) - started) / 1000000000 )) -lt 30 ] || { echo "sesame did not start" >&2; exit 1; }
    sleep 0.005
  done
  local startup_ms=$(( ($(date +%s%N) - started) / 1000000 ))
  sleep 1
  rss() { awk -v k="$1" '$1 == k":" {printf "%.1f", $2 / 1024}' "/proc/$server/status"; }
  local idle_rss peak_rss
  idle_rss=$(rss VmRSS)
  for scenario in refresh me login-code login-link mixed; do
    "$target/release/examples/loadgen" --url "http://127.0.0.1:$port" --smtp-port "$smtp" --scenario "$scenario" \
      --concurrency "$clients" --duration "$seconds" --json "$out/$name-$scenario.json" >/dev/null
  done
  peak_rss=$(rss VmHWM)
  kill "$server"; wait "$server" 2>/dev/null || true
  trap - EXIT
  rm -f "$out/$name-audit.jsonl"
  printf '{"startupMs": %s, "idleRssMiB": %s, "peakRssMiB": %s}\n' "$startup_ms" "$idle_rss" "$peak_rss" >"$out/$name-process.json"
}

run_config default RUST_LOG=info METRICS_FORMAT=both
run_config tuned RUST_LOG=warn METRICS_FORMAT=none LOG_FORMAT=json
bench/pg-limit.sh "$clients" "$seconds" >"$out/pg-limit.txt"
cut -d' ' -f1-3 /proc/loadavg >"$out/loadavg-after.txt"

python3 - "$out" <<'PY' | tee "$out/tables.md"
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
m = json.loads((out / "machine.json").read_text())
limits = dict(line.split() for line in (out / "pg-limit.txt").read_text().splitlines() if line.strip())
refresh_tps, select_tps = float(limits["refresh_tps"]), float(limits["select_tps"])
print(f'## Run of {m["date"]}: concurrency {m["concurrency"]}, {m["seconds"]} s per scenario')
print()
print(f'Commit {m["commit"]}; nproc {m["nproc"]}; load average {m["loadavg_before"]} before, '
      f'{(out / "loadavg-after.txt").read_text().strip()} after; PostgreSQL {m["postgres"]} '
      f'(fsync={m["fsync"]}, synchronous_commit={m["synchronous_commit"]}, '
      f'shared_buffers={m["shared_buffers"]}, max_connections={m["max_connections"]}).')
for name in ("default", "tuned"):
    print()
    print(f"### {name}")
    print()
    print("| scenario | operations/s | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors |")
    print("|---|---|---|---|---|---|---|---|")
    ops = {}
    for s in ("refresh", "me", "login-code", "login-link", "mixed"):
        r = json.loads((out / f"{name}-{s}.json").read_text())
        l = r["latencyMs"]
        ops[s] = r["operationsPerSecond"]
        print(f'| {s} | {r["operationsPerSecond"]:.0f} | {r["requestsPerSecond"]:.0f} | {l["p50"]} | '
              f'{l["p90"]} | {l["p99"]} | {l["max"]} | {r["errors"]} |')
    p = json.loads((out / f"{name}-process.json").read_text())
    print()
    print("| measure | value |")
    print("|---|---|")
    print(f'| refresh / pgbench refresh ({refresh_tps:.0f} tps) | {ops["refresh"] / refresh_tps:.2f} |')
    print(f'| me / pgbench -S ({select_tps:.0f} tps) | {ops["me"] / select_tps:.2f} |')
    print(f'| login-code / refresh | {ops["login-code"] / ops["refresh"]:.2f} |')
    print(f'| start-up to /health 200, migrations included | {p["startupMs"]} ms |')
    print(f'| idle RSS | {p["idleRssMiB"]} MiB |')
    print(f'| peak RSS over all scenarios | {p["peakRssMiB"]} MiB |')
PY
echo "raw results: $out"
