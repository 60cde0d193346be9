#!/usr/bin/env bash
# The cost of PgBouncer (docs/DEPLOYMENT.md, "Connection poolers"): `refresh` and `me` with
# sesame connected straight to PostgreSQL (with its statement cache, then with
# DATABASE_STATEMENT_CACHE=0), then through PgBouncer on loopback in pool_mode = session, then
# in pool_mode = transaction with DATABASE_STATEMENT_CACHE=0; same settings otherwise
# (bench/run.sh's `tuned` configuration, DATABASE_MAX_CONNECTIONS=10, PgBouncer's
# default_pool_size 11 so every pooled connection can get a server connection). A fresh database per run. Rate limits
# are off (all load comes from one IP); email goes to the load generator's SMTP server. Raw
# JSON and a Markdown table go to bench/results/<UTC date-time>-pgbouncer/. Loopback only;
# every step is bounded in time. As root, PgBouncer runs as the `postgres` user (it refuses root).
#
#   bench/pgbouncer.sh [seconds per run (15)] [concurrency (16)] [scenarios ("refresh me")]
#   SESAME_BIN=… LOADGEN_BIN=… bench/pgbouncer.sh …   other builds (no cargo build then)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-15}
clients=${2:-16}
scenarios=${3:-refresh me}
command -v pgbouncer >/dev/null || { echo "pgbouncer is not installed (Debian: apt-get install pgbouncer)" >&2; exit 1; }
PG_BASE=${PG_BASE:-$(scripts/pg.sh start)}
PG_BASE=${PG_BASE%/}
# shellcheck source=bench/lib.sh
. bench/lib.sh
release_bins sesame loadgen
out=bench/results/$(date -u +%Y-%m-%dT%H%MZ)-pgbouncer
mkdir -p "$out"
db=sesame_bench_pgb
work=$(mktemp -d "${TMPDIR:-/tmp}/sesame-bench-pgb.XXXXXX")

# PgBouncer in front of PG_BASE: trust on loopback, logging in to PostgreSQL as PG_BASE's user.
who=${PG_BASE#*://}
hostport=${who#*@}
user=${who%@*}
pw=
case $user in *:*) pw=${user#*:} user=${user%%:*} ;; esac
# start_bouncer MODE: a PgBouncer in pool_mode MODE; sets BOUNCER_PORT.
start_bouncer() {
  local mode=$1 port
  port=$(free_port)
  cat >"$work/pgbouncer-$mode.ini" <<INI
[databases]
$db = host=${hostport%:*} port=${hostport##*:} dbname=$db user=$user
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $work/userlist.txt
pool_mode = $mode
default_pool_size = 11
max_client_conn = 100
ignore_startup_parameters = extra_float_digits
INI
  [ "$(id -u)" -ne 0 ] || chmod 644 "$work"/*
  pgbouncer "${as_user[@]}" "$work/pgbouncer-$mode.ini" >"$work/pgbouncer-$mode.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "pgbouncer did not start: $(tail -n 3 "$work/pgbouncer-$mode.log")" >&2; exit 1; }
  BOUNCER_PORT=$port
}
printf '"%s" "%s"\n' "$user" "$pw" >"$work/userlist.txt"
as_user=()
if [ "$(id -u)" -eq 0 ]; then
  as_user=(-u "$(id -un postgres 2>/dev/null || echo nobody)")
  chmod 755 "$work"
fi
start_bouncer session
session_port=$BOUNCER_PORT
start_bouncer transaction
transaction_port=$BOUNCER_PORT
version=$(pgbouncer -V | sed -n '1s/^PgBouncer //p')

python3 - "$out/machine.json" "$seconds" "$clients" \
  "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$measured" \
  "$(pg_setting server_version)" "$(pg_setting fsync)" "$(pg_setting synchronous_commit)" "$version" <<'PY'
import json, sys, datetime
keys = ["seconds", "concurrency", "nproc", "loadavg_before", "commit", "postgres", "fsync",
        "synchronous_commit", "pgbouncer"]
facts = dict(zip(keys, sys.argv[2:]))
facts["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
json.dump(facts, open(sys.argv[1], "w"), indent=2)
PY

# run NAME DATABASE_URL SCENARIO [VAR=VALUE...]: one sesame on a fresh database, one load run.
run() {
  local name=$1 url=$2 scenario=$3 port smtp server started
  shift 3
  psql_ -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
  port=$(free_port); smtp=$(free_port)
  env DATABASE_URL="$url" PORT="$port" ADMIN_PORT=0 EMAIL_PROVIDER=smtp SMTP_URL="smtp://127.0.0.1:$smtp?tls=none" \
    RATE_LIMIT_ENABLED=false RUST_LOG=warn METRICS_FORMAT=none LOG_FORMAT=json DATABASE_MAX_CONNECTIONS=10 "$@" \
    "$SESAME_BIN" serve >"$out/$name-$scenario-server.log" 2>&1 &
  server=$!
  PIDS+=("$server")
  started=$(date +%s)
  until curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; do
    [ $(($(date +%s) - started)) -lt 60 ] || { echo "sesame did not start: $(tail -n 3 "$out/$name-$scenario-server.log")" >&2; exit 1; }
    sleep 0.05
  done
  timeout $((seconds + 60)) "$LOADGEN_BIN" --url "http://127.0.0.1:$port" --smtp-port "$smtp" \
    --scenario "$scenario" --concurrency "$clients" --duration "$seconds" --json "$out/$name-$scenario.json" >/dev/null
  kill "$server"; wait "$server" 2>/dev/null || true
}

for scenario in $scenarios; do
  run direct "$PG_BASE/$db" "$scenario"
  run direct-nocache "$PG_BASE/$db" "$scenario" DATABASE_STATEMENT_CACHE=0
  run session "postgres://$user@127.0.0.1:$session_port/$db" "$scenario"
  run transaction "postgres://$user@127.0.0.1:$transaction_port/$db" "$scenario" DATABASE_STATEMENT_CACHE=0
done
cut -d' ' -f1-3 /proc/loadavg >"$out/loadavg-after.txt"

python3 - "$out" "$scenarios" <<'PY' | tee "$out/tables.md"
import json, sys, pathlib
out, scenarios = pathlib.Path(sys.argv[1]), sys.argv[2].split()
m = json.loads((out / "machine.json").read_text())
print(f'## Through PgBouncer {m["pgbouncer"]}, {m["date"]}: concurrency {m["concurrency"]}, {m["seconds"]} s per run')
print()
print(f'Commit {m["commit"]}; nproc {m["nproc"]}; load average {m["loadavg_before"]} before, '
      f'{(out / "loadavg-after.txt").read_text().strip()} after; PostgreSQL {m["postgres"]} '
      f'(fsync={m["fsync"]}, synchronous_commit={m["synchronous_commit"]}).')
print()
labels = {
    "direct": "direct",
    "direct-nocache": "direct, DATABASE_STATEMENT_CACHE=0",
    "session": "PgBouncer pool_mode = session",
    "transaction": "PgBouncer pool_mode = transaction, DATABASE_STATEMENT_CACHE=0",
}
print("| scenario | connection | operations/s | p50 ms | p90 ms | p99 ms | errors | / direct |")
print("|---|---|---|---|---|---|---|---|")
for s in scenarios:
    direct = json.loads((out / f"direct-{s}.json").read_text())
    for name, label in labels.items():
        r = json.loads((out / f"{name}-{s}.json").read_text())
        l = r["latencyMs"]
        ratio = f'{r["operationsPerSecond"] / direct["operationsPerSecond"]:.2f}' if name != "direct" and direct["operationsPerSecond"] else ""
        print(f'| {s} | {label} | {r["operationsPerSecond"]:.0f} | {l["p50"]} | {l["p90"]} | {l["p99"]} | {r["errors"]} | {ratio} |')
PY
echo "raw results: $out"
