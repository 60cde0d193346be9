#!/usr/bin/env bash
# Reproduces the tables in docs/BENCHMARKS.md: builds sesame and the load
# generator in release mode, then, for each configuration, starts sesame on a
# fresh, empty database (so start-up includes applying the migrations), measures
# start-up and memory, and runs every scenario, at the given concurrency and
# then with a single client (latency); in the tuned configuration also the
# floor of the stack (bench/floor.rs: sesame's pool and SQL behind a bare
# server) for refresh and me, on the same database; then the database's own
# limits (bench/pg-limit.sh). Configurations:
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
#   BENCH_PROFILE=debug bench/run.sh 1 2     check the script end to end on debug builds
# Also from the environment: LATENCY_SECONDS (seconds per single-client
# scenario, default the same), ROTATION_TOKENS (bench/pg-limit.sh), SEED_SCALE (also
# run the tuned configuration on a database filled by `bench/seed --scale SEED_SCALE`
# and cleaned by `sesame cleanup` (the deletions a running deployment's job would have done),
# and keep the plans of the statements it runs: seeded-plans.txt; with SEED_FROM=DATABASE, a
# copy of that seeded database instead, see bench/lib.sh's seed_db), LOADGEN_BIN
# and FLOOR_BIN (prebuilt binaries; then nothing is built but what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-15}
clients=${2:-16}
latency_seconds=${LATENCY_SECONDS:-$seconds}
PG_BASE=${PG_BASE:-$(scripts/pg.sh start)}
target=${CARGO_TARGET_DIR:-target}
profile=${BENCH_PROFILE:-release}
case $profile in
  release) build=(--release) ;;
  debug) build=() ;;
  *) echo "BENCH_PROFILE: release or debug" >&2; exit 1 ;;
esac
if [ -n "${SESAME_BIN:-}" ]; then
  measured="binary $SESAME_BIN"
else
  SESAME_BIN=$target/$profile/sesame
  measured="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+changes') ($profile)"
  cargo build "${build[@]}" --locked --quiet --bin sesame
fi
if [ -z "${LOADGEN_BIN:-}" ]; then
  LOADGEN_BIN=$target/$profile/examples/loadgen
  cargo build "${build[@]}" --locked --quiet --example loadgen
fi
if [ -z "${FLOOR_BIN:-}" ]; then
  FLOOR_BIN=$target/$profile/examples/floor
  cargo build "${build[@]}" --locked --quiet --example floor
fi
export PG_BASE SESAME_BIN
out=bench/results/$(date -u +%Y-%m-%dT%H%MZ)
mkdir -p "$out"

# free_port, psql_, pg_setting and seed_db (its exit trap is replaced by run_config's own).
. bench/lib.sh

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

# hot_plans DB VAR=VALUE...: EXPLAIN (ANALYZE, BUFFERS) of every statement sesame runs
# for a few seconds of the mixed scenario with one client, by auto_explain in new
# sessions of DB, read back from the server log (PG_BASE must be scripts/pg.sh's
# cluster, or any whose log is server.log beside its data folder); one plan per
# statement goes to $out/seeded-plans.txt.
hot_plans() {
  local db=$1; shift
  local log size port smtp server
  log=$(psql_ -c "SELECT current_setting('data_directory') || '/../server.log'")
  psql_ -c "ALTER DATABASE $db SET session_preload_libraries = 'auto_explain'" \
    -c "ALTER DATABASE $db SET auto_explain.log_min_duration = 0" \
    -c "ALTER DATABASE $db SET auto_explain.log_analyze = on" \
    -c "ALTER DATABASE $db SET auto_explain.log_buffers = on" \
    -c "ALTER DATABASE $db SET auto_explain.log_format = json" >/dev/null
  size=$(psql_ -c "SELECT (pg_stat_file('$log')).size")
  port=$(free_port); smtp=$(free_port)
  env DATABASE_URL="$PG_BASE/$db" PORT="$port" ADMIN_PORT=0 EMAIL_PROVIDER=smtp SMTP_URL="smtp://127.0.0.1:$smtp?tls=none" \
    RATE_LIMIT_ENABLED=false "$@" "$SESAME_BIN" serve >"$out/plans-server.log" 2>&1 &
  server=$!
  until curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; do sleep 0.05; done
  "$LOADGEN_BIN" --url "http://127.0.0.1:$port" --smtp-port "$smtp" --scenario mixed --concurrency 1 --duration 3 >/dev/null
  kill "$server"; wait "$server" 2>/dev/null || true
  psql_ -c "SELECT pg_read_file('$log', $size, (pg_stat_file('$log')).size - $size)" | bench/plans.py >"$out/seeded-plans.txt"
}

# run_config NAME VAR=VALUE...: one sesame on a fresh database, every scenario against it.
run_config() {
  local name=$1; shift
  local db=sesame_bench_$name port smtp started server
  if [ "$name" != seeded ]; then
    psql_ -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
  else
    # A year of data first (bench/seed), so start-up finds the migrations applied.
    seed_db "$db" "$SEED_SCALE" "$SESAME_BIN" >"$out/seed.txt"
    settle_seeded "$db" "$SESAME_BIN" >"$out/seed-cleanup.txt"
  fi
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
  load() { "$LOADGEN_BIN" --url "http://127.0.0.1:$port" --smtp-port "$smtp" "$@" >/dev/null; }
  for scenario in refresh me login-code login-link mixed; do
    load --scenario "$scenario" --concurrency "$clients" --duration "$seconds" --json "$out/$name-$scenario.json"
  done
  for scenario in refresh me login-code login-link mixed; do
    load --scenario "$scenario" --concurrency 1 --duration "$latency_seconds" --json "$out/$name-$scenario-c1.json"
  done
  peak_rss=$(rss VmHWM)
  if [ "$name" = tuned ]; then
    # The floor, on this database and with this environment; sign-ins go to sesame.
    local floor_port floor
    floor_port=$(free_port)
    env DATABASE_URL="$PG_BASE/$db" FLOOR_PORT="$floor_port" "$@" "$FLOOR_BIN" >"$out/floor-server.log" 2>&1 &
    floor=$!
    trap 'kill "$server" "$floor" 2>/dev/null || true' EXIT
    started=$(date +%s%N)
    until curl -sS -o /dev/null "http://127.0.0.1:$floor_port/auth/me" 2>/dev/null; do
      [ $(( ($(date +%s%N) - started) / 1000000000 )) -lt 30 ] || { echo "the floor did not start" >&2; exit 1; }
      sleep 0.005
    done
    for scenario in refresh me; do
      load --measure-url "http://127.0.0.1:$floor_port" --scenario "$scenario" --concurrency "$clients" \
        --duration "$seconds" --json "$out/floor-$scenario.json"
      load --measure-url "http://127.0.0.1:$floor_port" --scenario "$scenario" --concurrency 1 \
        --duration "$latency_seconds" --json "$out/floor-$scenario-c1.json"
    done
    kill "$floor"; wait "$floor" 2>/dev/null || true
  fi
  kill "$server"; wait "$server" 2>/dev/null || true
  trap - EXIT
  [ "$name" != seeded ] || hot_plans "$db" "$@"
  psql_ -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  rm -f "$out/$name-audit.jsonl"
  printf '{"startupMs": %s, "idleRssMiB": %s, "peakRssMiB": %s}\n' "$startup_ms" "$idle_rss" "$peak_rss" >"$out/$name-process.json"
}

run_config default RUST_LOG=info METRICS_FORMAT=both
run_config tuned RUST_LOG=warn METRICS_FORMAT=none LOG_FORMAT=json
# The same as tuned on a year of data (bench/seed), when SEED_SCALE is set.
[ -z "${SEED_SCALE:-}" ] || run_config seeded RUST_LOG=warn METRICS_FORMAT=none LOG_FORMAT=json
bench/pg-limit.sh "$clients" "$seconds" >"$out/pg-limit.txt"
cut -d' ' -f1-3 /proc/loadavg >"$out/loadavg-after.txt"

python3 - "$out" <<'PY' | tee "$out/tables.md"
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
m = json.loads((out / "machine.json").read_text())
limits = dict(line.split() for line in (out / "pg-limit.txt").read_text().splitlines() if line.strip())
refresh_tps, rotation_tps = float(limits["refresh_tps"]), float(limits["rotation_tps"])
select_tps = float(limits["select_tps"])
rotation3_tps, contract_tps = float(limits["rotation3_tps"]), float(limits["contract_tps"])
scenarios = ("refresh", "me", "login-code", "login-link", "mixed")
load = lambda name: json.loads((out / f"{name}.json").read_text())
floor = {s: load(f"floor-{s}") for s in ("refresh", "me")}
floor_c1 = {s: load(f"floor-{s}-c1") for s in ("refresh", "me")}
print(f'## Run of {m["date"]}: concurrency {m["concurrency"]}, {m["seconds"]} s per scenario')
print()
print(f'Commit {m["commit"]}; nproc {m["nproc"]}; load average {m["loadavg_before"]} before, '
      f'{(out / "loadavg-after.txt").read_text().strip()} after; PostgreSQL {m["postgres"]} '
      f'(fsync={m["fsync"]}, synchronous_commit={m["synchronous_commit"]}, '
      f'shared_buffers={m["shared_buffers"]}, max_connections={m["max_connections"]}).')
print()
print(f'Floor of the stack (bench/floor.rs, same database, concurrency {m["concurrency"]}): '
      f'refresh {floor["refresh"]["operationsPerSecond"]:.0f}/s, me {floor["me"]["operationsPerSecond"]:.0f}/s; '
      f'with one client: refresh p50 {floor_c1["refresh"]["latencyMs"]["p50"]} ms, p99 {floor_c1["refresh"]["latencyMs"]["p99"]} ms; '
      f'me p50 {floor_c1["me"]["latencyMs"]["p50"]} ms, p99 {floor_c1["me"]["latencyMs"]["p99"]} ms. '
      f'pgbench: sesame\'s refresh statement {refresh_tps:.0f} tps, minimal rotation {rotation_tps:.0f} tps, '
      f'with three audit rows {rotation3_tps:.0f} tps, and the session\'s slide {contract_tps:.0f} tps, -S {select_tps:.0f} tps.')
for name in ("default", "tuned"):
    print()
    print(f"### {name}")
    print()
    print("| scenario | operations/s | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors | 1 client: p50 ms | p99 ms | floor, 1 client: p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    ops = {}
    for s in scenarios:
        r, c1 = load(f"{name}-{s}"), load(f"{name}-{s}-c1")
        l = r["latencyMs"]
        f1 = floor_c1[s]["latencyMs"] if s in floor_c1 else {"p50": "–", "p99": "–"}
        ops[s] = r["operationsPerSecond"]
        print(f'| {s} | {r["operationsPerSecond"]:.0f} | {r["requestsPerSecond"]:.0f} | {l["p50"]} | '
              f'{l["p90"]} | {l["p99"]} | {l["max"]} | {r["errors"] + c1["errors"]} | '
              f'{c1["latencyMs"]["p50"]} | {c1["latencyMs"]["p99"]} | {f1["p50"]} | {f1["p99"]} |')
    p = json.loads((out / f"{name}-process.json").read_text())
    print()
    print("| measure | value |")
    print("|---|---|")
    print(f'| refresh / floor ({floor["refresh"]["operationsPerSecond"]:.0f}/s) | {ops["refresh"] / floor["refresh"]["operationsPerSecond"]:.2f} |')
    print(f'| me / floor ({floor["me"]["operationsPerSecond"]:.0f}/s) | {ops["me"] / floor["me"]["operationsPerSecond"]:.2f} |')
    print(f'| refresh / pgbench minimal rotation ({rotation_tps:.0f} tps) | {ops["refresh"] / rotation_tps:.2f} |')
    print(f'| refresh / pgbench minimal rotation with three audit rows ({rotation3_tps:.0f} tps) | {ops["refresh"] / rotation3_tps:.2f} |')
    print(f'| refresh / pgbench minimal rotation with three audit rows and the slide ({contract_tps:.0f} tps) | {ops["refresh"] / contract_tps:.2f} |')
    print(f'| refresh / pgbench replay of its statement ({refresh_tps:.0f} tps) | {ops["refresh"] / refresh_tps:.2f} |')
    print(f'| me / pgbench -S ({select_tps:.0f} tps) | {ops["me"] / select_tps:.2f} |')
    print(f'| login-code / refresh | {ops["login-code"] / ops["refresh"]:.2f} |')
    print(f'| start-up to /health 200, migrations included | {p["startupMs"]} ms |')
    print(f'| idle RSS | {p["idleRssMiB"]} MiB |')
    print(f'| peak RSS over all scenarios | {p["peakRssMiB"]} MiB |')
seeded = out / "seeded-refresh.json"
if seeded.exists():
    seed_facts = (out / "seed.txt").read_text().splitlines()[0] if (out / "seed.txt").exists() else ""
    print()
    print("### seeded vs empty (tuned configuration)")
    print()
    print(f"The same scenarios on a database filled by bench/seed ({seed_facts}); targets: operations/s at least 0.9 "
          "of the empty database's, p99 at most 1.5 times.")
    print()
    print("| scenario | empty ops/s | seeded ops/s | seeded / empty | empty p99 ms | seeded p99 ms | seeded / empty | 1 client, seeded: p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for s in scenarios:
        e, d, c1 = load(f"tuned-{s}"), load(f"seeded-{s}"), load(f"seeded-{s}-c1")
        ep, dp = e["latencyMs"]["p99"], d["latencyMs"]["p99"]
        print(f'| {s} | {e["operationsPerSecond"]:.0f} | {d["operationsPerSecond"]:.0f} | '
              f'{d["operationsPerSecond"] / e["operationsPerSecond"]:.2f} | {ep} | {dp} | {dp / ep:.2f} | '
              f'{c1["latencyMs"]["p50"]} | {c1["latencyMs"]["p99"]} |')
PY
echo "raw results: $out"
