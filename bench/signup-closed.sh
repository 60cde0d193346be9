#!/usr/bin/env bash
# With ALLOW_SIGNUP=false, does POST /auth/send-code take as long for an address
# without an account as for one with an account? For each configuration (the
# two of bench/run.sh, plus ALLOW_SIGNUP=false), starts sesame on a fresh
# database, inserts one account per virtual user (known<i>@bench.test), and runs
# the load generator's `signup-closed` scenario, which alternates sends to an
# account and to a fresh address without one and times them apart; once with one
# client (what a single prober sees) and once with `concurrency` clients.
# Rate limits are off (all load comes from one IP); email goes to the SMTP server
# inside the load generator. Raw JSON and a Markdown table go to
# bench/results/<UTC date-time>-signup-closed/. Loopback only; every step is
# bounded in time.
#
#   bench/signup-closed.sh [seconds per run (15)] [concurrency (16)]
#   SESAME_BIN=other/sesame bench/signup-closed.sh …   measure another build of sesame
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-15}
clients=${2:-16}
PG_BASE=${PG_BASE:-$(scripts/pg.sh start)}
# shellcheck source=bench/lib.sh
. bench/lib.sh
release_bins sesame loadgen
out=bench/results/$(date -u +%Y-%m-%dT%H%MZ)-signup-closed
mkdir -p "$out"

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

# run_config NAME VAR=VALUE...: one sesame with sign-up closed on a fresh database.
run_config() {
  local name=$1; shift
  local db=sesame_bench_signup_$name port smtp started server
  psql_ -d "$PG_BASE/postgres" -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
  port=$(free_port); smtp=$(free_port)
  started=$(date +%s)
  env DATABASE_URL="$PG_BASE/$db" PORT="$port" EMAIL_PROVIDER=smtp SMTP_URL="smtp://127.0.0.1:$smtp?tls=none" \
    RATE_LIMIT_ENABLED=false ALLOW_SIGNUP=false METRICS_FILE_PATH="$out/$name-audit.jsonl" "$@" \
    "$SESAME_BIN" serve >"$out/$name-server.log" 2>&1 &
  server=$!
  trap 'kill "$server" 2>/dev/null || true' EXIT
  until curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; do
    [ $(( $(date +%s) - started )) -lt 30 ] || { echo "sesame did not start" >&2; exit 1; }
    sleep 0.05
  done
  psql_ -d "$PG_BASE/$db" -c \
    "INSERT INTO users (id, email) SELECT gen_random_uuid(), 'known' || n || '@bench.test' FROM generate_series(0, $clients - 1) n" >/dev/null
  for c in 1 "$clients"; do
    timeout $(( seconds + 60 )) "$LOADGEN_BIN" --url "http://127.0.0.1:$port" --smtp-port "$smtp" \
      --scenario signup-closed --concurrency "$c" --duration "$seconds" --json "$out/$name-c$c.json" >/dev/null
  done
  kill "$server"; wait "$server" 2>/dev/null || true
  trap - EXIT
  rm -f "$out/$name-audit.jsonl"
}

run_config default RUST_LOG=info METRICS_FORMAT=both
run_config tuned RUST_LOG=warn METRICS_FORMAT=none LOG_FORMAT=json
cut -d' ' -f1-3 /proc/loadavg >"$out/loadavg-after.txt"

python3 - "$out" "$clients" <<'PY' | tee "$out/tables.md"
import json, sys, pathlib
out, clients = pathlib.Path(sys.argv[1]), sys.argv[2]
m = json.loads((out / "machine.json").read_text())
print(f'## signup-closed, {m["date"]}: {m["seconds"]} s per run')
print()
print(f'Commit {m["commit"]}; nproc {m["nproc"]}; load average {m["loadavg_before"]} before, '
      f'{(out / "loadavg-after.txt").read_text().strip()} after; PostgreSQL {m["postgres"]} '
      f'(fsync={m["fsync"]}, synchronous_commit={m["synchronous_commit"]}).')
print()
print("| configuration | clients | sends (known / unknown) | known p50 ms | unknown p50 ms | "
      "known p90 ms | unknown p90 ms | unknown − known p50 ms | errors |")
print("|---|---|---|---|---|---|---|---|---|")
for name in ("default", "tuned"):
    for c in ("1", clients):
        r = json.loads((out / f"{name}-c{c}.json").read_text())
        k, u = r["known"]["latencyMs"], r["unknown"]["latencyMs"]
        print(f'| {name} | {c} | {r["known"]["requests"]} / {r["unknown"]["requests"]} | {k["p50"]} | {u["p50"]} | '
              f'{k["p90"]} | {u["p90"]} | {r["unknownMinusKnownMs"]["p50"]:+.2f} | {r["errors"]} |')
PY
echo "raw results: $out"
