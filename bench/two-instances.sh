#!/usr/bin/env bash
# Throughput of two sesame instances on one database against one instance (docs/DEPLOYMENT.md,
# "Scaling out"). For each scenario: one instance behind nginx (round robin, keep-alive to the
# upstreams), then two instances started together on the same database behind the same nginx,
# each time with `concurrency` virtual users of one load generator; the same proxy in both
# runs, so the ratio is sesame's and PostgreSQL's. Both runs use bench/run.sh's `tuned`
# configuration (RUST_LOG=warn, METRICS_FORMAT=none, LOG_FORMAT=json) and the default pool
# (DATABASE_MAX_CONNECTIONS=10 per instance). Rate limits are off (all load comes from one
# IP); every instance mails the load generator's SMTP server. Raw JSON and a Markdown table go
# to bench/results/<UTC date-time>-two-instances/. Loopback only; every step is bounded in time.
#
#   bench/two-instances.sh [seconds per run (15)] [concurrency (16)] [scenarios ("refresh me mixed")]
#   SESAME_BIN=… LOADGEN_BIN=… bench/two-instances.sh …   other builds (no cargo build then)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-15}
clients=${2:-16}
scenarios=${3:-refresh me mixed}
command -v nginx >/dev/null || { echo "nginx is not installed (Debian: apt-get install nginx)" >&2; exit 1; }
PG_BASE=${PG_BASE:-$(scripts/pg.sh start)}
# shellcheck source=bench/lib.sh
. bench/lib.sh
release_bins sesame loadgen
out=bench/results/$(date -u +%Y-%m-%dT%H%MZ)-two-instances
mkdir -p "$out"
db=sesame_bench_two
work=$(mktemp -d "${TMPDIR:-/tmp}/sesame-bench-two.XXXXXX")
# One JWT_SECRET for the instances of a run, as a deployment shares it (it also peppers the codes).
secret=$(head -c 48 /dev/urandom | base64 | tr -d '\n')

python3 - "$out/machine.json" "$seconds" "$clients" \
  "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$measured" \
  "$(pg_setting server_version)" "$(pg_setting fsync)" "$(pg_setting synchronous_commit)" \
  "$(pg_setting max_connections)" <<'PY'
import json, sys, datetime
keys = ["seconds", "concurrency", "nproc", "loadavg_before", "commit", "postgres", "fsync",
        "synchronous_commit", "max_connections"]
facts = dict(zip(keys, sys.argv[2:]))
facts["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
json.dump(facts, open(sys.argv[1], "w"), indent=2)
PY

# start_instances N: N instances on a fresh database, started together, behind nginx on
# 127.0.0.1:$LB, mailing to 127.0.0.1:$SMTP.
start_instances() {
  local i port started ports=()
  psql_ -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
  SMTP=$(free_port) LB=$(free_port)
  for i in $(seq "$1"); do
    port=$(free_port)
    env DATABASE_URL="$PG_BASE/$db" JWT_SECRET="$secret" PORT="$port" ADMIN_PORT=0 EMAIL_PROVIDER=smtp SMTP_URL="smtp://127.0.0.1:$SMTP?tls=none" \
      RATE_LIMIT_ENABLED=false RUST_LOG=warn METRICS_FORMAT=none LOG_FORMAT=json \
      "$SESAME_BIN" serve >"$out/instance-$i-server.log" 2>&1 &
    PIDS+=("$!")
    ports+=("$port")
  done
  started=$(date +%s)
  for port in "${ports[@]}"; do
    until curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; do
      [ $(($(date +%s) - started)) -lt 60 ] || { echo "sesame did not start: $(tail -n 3 "$out"/instance-*-server.log)" >&2; exit 1; }
      sleep 0.05
    done
  done
  mkdir -p "$work/nginx"
  {
    echo "pid $work/nginx/nginx.pid; error_log $work/nginx/error.log; worker_processes auto;"
    echo "events { worker_connections 4096; }"
    echo "http { access_log off; client_body_temp_path $work/nginx/body; proxy_temp_path $work/nginx/proxy;"
    echo "  fastcgi_temp_path $work/nginx/fcgi; uwsgi_temp_path $work/nginx/uwsgi; scgi_temp_path $work/nginx/scgi;"
    echo "  upstream sesame { $(printf 'server 127.0.0.1:%s; ' "${ports[@]}") keepalive 64; }"
    echo "  server { listen 127.0.0.1:$LB; location / { proxy_pass http://sesame; proxy_http_version 1.1;"
    echo "    proxy_set_header Connection \"\"; } } }"
  } >"$work/nginx/nginx.conf"
  nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' 2>>"$work/nginx/stderr" &
  PIDS+=("$!")
  for _ in $(seq 50); do
    curl -fsS "http://127.0.0.1:$LB/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "nginx did not start: $(cat "$work/nginx/stderr" "$work/nginx/error.log" 2>/dev/null | tail -n 3)" >&2
  exit 1
}

stop_instances() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}

# load NAME SCENARIO: the load generator through nginx.
load() {
  timeout $((seconds + 60)) "$LOADGEN_BIN" --url "http://127.0.0.1:$LB" --smtp-port "$SMTP" \
    --scenario "$2" --concurrency "$clients" --duration "$seconds" --json "$out/$1-$2.json" >/dev/null ||
    { echo "the load generator failed ($1, $2)" >&2; exit 1; }
}

for n in 1 2; do
  for scenario in $scenarios; do
    # A fresh database per run, so the second run does not start on the first's rows.
    start_instances "$n"
    load "instances$n" "$scenario"
    stop_instances
  done
done
cut -d' ' -f1-3 /proc/loadavg >"$out/loadavg-after.txt"

python3 - "$out" "$scenarios" <<'PY' | tee "$out/tables.md"
import json, sys, pathlib
out, scenarios = pathlib.Path(sys.argv[1]), sys.argv[2].split()
m = json.loads((out / "machine.json").read_text())
print(f'## Two instances behind nginx, {m["date"]}: concurrency {m["concurrency"]}, {m["seconds"]} s per run')
print()
print(f'Commit {m["commit"]}; nproc {m["nproc"]}; load average {m["loadavg_before"]} before, '
      f'{(out / "loadavg-after.txt").read_text().strip()} after; PostgreSQL {m["postgres"]} '
      f'(fsync={m["fsync"]}, synchronous_commit={m["synchronous_commit"]}, max_connections={m["max_connections"]}).')
print()
print("| scenario | instances | operations/s | p50 ms | p90 ms | p99 ms | errors | two / one |")
print("|---|---|---|---|---|---|---|---|")
for s in scenarios:
    one = json.loads((out / f"instances1-{s}.json").read_text())["operationsPerSecond"]
    for n in (1, 2):
        r = json.loads((out / f"instances{n}-{s}.json").read_text())
        l = r["latencyMs"]
        ratio = f'{r["operationsPerSecond"] / one:.2f}' if n == 2 and one else ""
        print(f'| {s} | {n} | {r["operationsPerSecond"]:.0f} | {l["p50"]} | {l["p90"]} | {l["p99"]} | {r["errors"]} | {ratio} |')
PY
echo "raw results: $out"
