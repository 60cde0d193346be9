#!/usr/bin/env bash
# The cleanup job under load (docs/BENCHMARKS.md, "Cleanup under load"). Seeds a fresh
# database with bench/seed (a year of users, sessions, refresh tokens, audit events, and
# expired codes and links: most of the tokens and sessions are past their end, so the
# cleanup job has millions of rows to delete at scale 1), starts sesame in the default
# configuration (RUST_LOG=info, console and JSON Lines audit outputs on), and runs the load
# generator in slices of a few seconds, alternating `refresh` and `mixed`:
#   before   three slices of each while a psql session holds the cleanup lock (the
#            server's own job, due 30 s after start, skips its round)
#   during   `sesame cleanup` runs (batches of 5 000 rows, one transaction each), slices
#            until it ends (at most 120 slices)
# and reports operations/s and p99 per phase and scenario (the worst slice too), the
# cleanup's time and what it deleted, and each table's rows and sizes before, right after,
# and after a plain VACUUM (what autovacuum would do). Raw JSON, the sizes and a Markdown
# table go to bench/results/<UTC date-time>-cleanup/. Loopback only; bounded in time.
#
#   bench/cleanup-load.sh [scale (0.1)] [seconds per slice (5)] [concurrency (16)]
#   BENCH_PROFILE=debug bench/cleanup-load.sh 0.001 1 2   check the script end to end
#   SESAME_BIN=… LOADGEN_BIN=…                            prebuilt binaries
#   SEED_FROM=DATABASE                                    copy a seeded database (bench/lib.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${1:-0.1}
slice=${2:-5}
clients=${3:-16}
PG_BASE=${PG_BASE:-$(scripts/pg.sh start)}
target=${CARGO_TARGET_DIR:-target}
profile=${BENCH_PROFILE:-release}
case $profile in
  release) build=(--release) ;;
  debug) build=() ;;
  *) echo "BENCH_PROFILE: release or debug" >&2; exit 1 ;;
esac
if [ -z "${SESAME_BIN:-}" ]; then
  SESAME_BIN=$target/$profile/sesame
  cargo build "${build[@]}" --locked --quiet --bin sesame
fi
if [ -z "${LOADGEN_BIN:-}" ]; then
  LOADGEN_BIN=$target/$profile/examples/loadgen
  cargo build "${build[@]}" --locked --quiet --example loadgen
fi
out=bench/results/$(date -u +%Y-%m-%dT%H%MZ)-cleanup
mkdir -p "$out"
db=sesame_bench_cleanup
url=$PG_BASE/$db
# free_port and seed_db (the exit trap set below replaces lib.sh's); psql_ without a database.
. bench/lib.sh
psql_() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

seed_db "$db" "$scale" "$SESAME_BIN" | tee "$out/seed.txt" >&2
psql_ -d "$url" -c "VACUUM ANALYZE" >/dev/null

# sizes LABEL: rows (estimated after the last VACUUM/ANALYZE: live and dead), table and index
# sizes, and how many times autovacuum has vacuumed the table since the database was made.
tables="otp_codes magic_links sessions refresh_tokens rate_limits audit_events webhook_deliveries"
sizes() {
  local t
  for t in $tables; do
    # Summed over the partitions of a partitioned table (a plain table is its own one leaf).
    psql_ -d "$url" -F ' | ' -c "SELECT '$1', '$t', sum(s.n_live_tup), sum(s.n_dead_tup),
        round(sum(pg_table_size(p.relid)) / 1048576.0, 1), round(sum(pg_indexes_size(p.relid)) / 1048576.0, 1),
        sum(s.autovacuum_count)
      FROM (SELECT relid FROM pg_partition_tree('$t') WHERE isleaf
            UNION SELECT oid FROM pg_class WHERE oid = '$t'::regclass AND relkind = 'r') p
      JOIN pg_stat_user_tables s ON s.relid = p.relid"
  done
}
sizes before >"$out/sizes.txt"

# Hold the cleanup lock (store::cleanup's key) in a session of our own.
key=$(python3 -c 'print(0x5e5a3e00c1ea)')
coproc LOCK { psql -X -q -At -d "$url"; }
echo "SELECT 'held' FROM pg_advisory_lock($key);" >&"${LOCK[1]}"
read -r held <&"${LOCK[0]}"
[ "$held" = held ] || { echo "could not take the cleanup lock" >&2; exit 1; }

port=$(free_port); smtp=$(free_port)
env DATABASE_URL="$url" PORT="$port" ADMIN_PORT=0 EMAIL_PROVIDER=smtp SMTP_URL="smtp://127.0.0.1:$smtp?tls=none" \
  RATE_LIMIT_ENABLED=false CLEANUP_INTERVAL=24h RUST_LOG=info METRICS_FORMAT=both \
  METRICS_FILE_PATH="$out/cleanup-audit.jsonl" "$SESAME_BIN" serve >"$out/cleanup-server.log" 2>&1 &
server=$!
trap 'kill "$server" ${cleaner:-} 2>/dev/null || true; rm -f "$out/cleanup-audit.jsonl" "$out"/*.pos' EXIT
for _ in $(seq 300); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://127.0.0.1:$port/health" >/dev/null

n=0
# run_slice PHASE SCENARIO: one slice of load, its JSON named after its order.
run_slice() {
  n=$((n + 1))
  "$LOADGEN_BIN" --url "http://127.0.0.1:$port" --smtp-port "$smtp" --scenario "$2" \
    --concurrency "$clients" --duration "$slice" --json "$out/$(printf %03d $n)-$1-$2.json" >/dev/null
}
for _ in 1 2 3; do run_slice before refresh; run_slice before mixed; done

echo "SELECT pg_advisory_unlock($key);" >&"${LOCK[1]}"
exec {LOCK[1]}>&-
started=$(date +%s%N)
env -i PATH="$PATH" HOME="$HOME" DATABASE_URL="$url" RUST_LOG=warn "$SESAME_BIN" cleanup >"$out/cleanup.txt" 2>"$out/cleanup-warnings.log" &
cleaner=$!
slices=0
while kill -0 "$cleaner" 2>/dev/null && [ "$slices" -lt 120 ]; do
  run_slice during refresh; run_slice during mixed
  slices=$((slices + 2))
done
wait "$cleaner"
cleanup_ms=$(( ($(date +%s%N) - started) / 1000000 ))
kill "$server"; wait "$server" 2>/dev/null || true
psql_ -d "$url" -c "ANALYZE" >/dev/null
sizes after >>"$out/sizes.txt"
psql_ -d "$url" -c "VACUUM ANALYZE" >/dev/null
sizes vacuumed >>"$out/sizes.txt"

python3 - "$out" "$cleanup_ms" "$scale" "$clients" "$slice" <<'PY' | tee "$out/table.md"
import json, sys, pathlib, statistics
out, cleanup_ms, scale, clients, slice_s = pathlib.Path(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:]
runs = {}
for f in sorted(out.glob("[0-9][0-9][0-9]-*.json")):
    _, phase, scenario = f.stem.split("-", 2)
    runs.setdefault((phase, scenario), []).append(json.loads(f.read_text()))
print(f"Scale {scale} (bench/seed), concurrency {clients}, slices of {slice_s} s; "
      f"`sesame cleanup` took {cleanup_ms / 1000:.1f} s: {(out / 'cleanup.txt').read_text().strip()}")
print()
print("| phase | scenario | slices | operations/s (median) | p99 ms (median) | p99 ms (worst slice) | errors |")
print("|---|---|---|---|---|---|---|")
for (phase, scenario), rs in sorted(runs.items(), key=lambda kv: (kv[0][0] != "before", kv[0][1])):
    p99 = [r["latencyMs"]["p99"] for r in rs]
    print(f'| {phase} cleanup | {scenario} | {len(rs)} | {statistics.median(r["operationsPerSecond"] for r in rs):.0f} | '
          f'{statistics.median(p99):.2f} | {max(p99):.2f} | {sum(r["errors"] for r in rs)} |')
for scenario in ("refresh", "mixed"):
    b, d = runs.get(("before", scenario)), runs.get(("during", scenario))
    if b and d:
        ratio = statistics.median(r["latencyMs"]["p99"] for r in d) / statistics.median(r["latencyMs"]["p99"] for r in b)
        print(f"\n{scenario}: p99 during / before = {ratio:.2f}", end="")
print()
print()
print("| when | table | live rows | dead rows | table MB | indexes MB | autovacuums |")
print("|---|---|---|---|---|---|---|")
for line in (out / "sizes.txt").read_text().splitlines():
    print("| " + line + " |")
PY
psql_ -d "$PG_BASE/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
echo "results in $out" >&2
