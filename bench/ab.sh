#!/usr/bin/env bash
# Two builds of sesame, back to back: A and B each serve from a fresh database of their own
# (each applies its own migrations), side by side, and the load generator sends each scenario
# at concurrency 16 to A, then to B, for the given number of rounds, so both see the same
# machine within a minute of each other. Prints ops/s and p99 per round, their medians and the
# median of the rounds' B / A, then what the runs left in each database (rows, heap-only updates, table and
# index sizes of sessions and refresh_tokens); raw JSON goes to
# bench/results/<UTC date-time>-ab-<scenarios>/. Loopback only; every step is bounded in time.
#
#   bench/ab.sh SESAME_A SESAME_B [scenarios, comma-separated (refresh)] [seconds per run (15)] [rounds (3)]
#   CONFIG=default bench/ab.sh …   RUST_LOG=info and the JSON Lines file on (default: tuned,
#                                  RUST_LOG=warn and METRICS_FORMAT=none); rate limits off
#   B_SEED_FROM=DATABASE …         B serves from a copy of a database bench/seed filled (see
#                                  bench/lib.sh's seed_db), cleaned by `sesame cleanup`, vacuumed
#                                  and checkpointed first, as bench/run.sh's seeded run: with the
#                                  same build as A and B, seeded against empty, interleaved
#   LOADGEN_BIN=…                  a prebuilt load generator
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '9,16p' "$0" >&2; exit 2; }
bin_a=$1 bin_b=$2
IFS=, read -r -a scenarios <<<"${3:-refresh}"
seconds=${4:-15}
rounds=${5:-3}
PG_BASE=${PG_BASE:-$(scripts/pg.sh start)}
PG_BASE=${PG_BASE%/}
# shellcheck source=bench/lib.sh
. bench/lib.sh
release_bins loadgen
case ${CONFIG:-tuned} in
  tuned) config=(RUST_LOG=warn METRICS_FORMAT=none LOG_FORMAT=json) ;;
  default) config=(RUST_LOG=info METRICS_FORMAT=both) ;;
  *) echo "CONFIG: tuned or default" >&2; exit 2 ;;
esac
out=bench/results/$(date -u +%Y-%m-%dT%H%M%SZ)-ab-$(IFS=-; echo "${scenarios[*]}")
mkdir -p "$out"
work=$(mktemp -d)
# (lib.sh's exit trap drops $db: one of the two databases; the other is dropped here.)
trap 'bench_cleanup; psql_ -c "DROP DATABASE IF EXISTS sesame_bench_ab_a WITH (FORCE)" >/dev/null 2>&1 || true' EXIT

declare -A port smtp
for who in a b; do
  db=sesame_bench_ab_$who
  bin=$bin_a; [ "$who" = a ] || bin=$bin_b
  if [ "$who" = b ] && [ -n "${B_SEED_FROM:-}" ]; then
    SEED_FROM=$B_SEED_FROM seed_db "$db" 0 "$bin" >"$out/seed.txt"
    settle_seeded "$db" "$bin" >>"$out/seed.txt"
  else
    psql_ -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
  fi
  port[$who]=$(free_port); smtp[$who]=$(free_port)
  env DATABASE_URL="$PG_BASE/$db" PORT="${port[$who]}" ADMIN_PORT=0 RATE_LIMIT_ENABLED=false \
    EMAIL_PROVIDER=smtp SMTP_URL="smtp://127.0.0.1:${smtp[$who]}?tls=none" \
    METRICS_FILE_PATH="$work/$who-audit.jsonl" "${config[@]}" "$bin" serve >"$work/$who-server.log" 2>&1 &
  PIDS+=("$!")
  started=$(date +%s)
  until curl -fsS "http://127.0.0.1:${port[$who]}/health" >/dev/null 2>&1; do
    [ $(($(date +%s) - started)) -lt 60 ] || { echo "sesame $who did not start" >&2; cat "$work/$who-server.log" >&2; exit 1; }
    sleep 0.05
  done
done
{
  echo "A: $bin_a"; echo "B: $bin_b${B_SEED_FROM:+, on a copy of $B_SEED_FROM}"
  echo "scenarios: ${scenarios[*]}, ${CONFIG:-tuned} configuration, $seconds s per run, $rounds rounds"
  echo "load average before: $(cut -d ' ' -f 1-3 /proc/loadavg)"
} >"$out/facts.txt"
for round in $(seq "$rounds"); do
  for scenario in "${scenarios[@]}"; do
    for who in a b; do
      timeout $((seconds + 60)) "$LOADGEN_BIN" --url "http://127.0.0.1:${port[$who]}" --smtp-port "${smtp[$who]}" \
        --scenario "$scenario" --concurrency 16 --duration "$seconds" --json "$out/$who-$scenario-$round.json" >/dev/null
    done
  done
done

# What the runs left in each database: rows, heap-only updates, table and index sizes.
sleep 2 # (the servers' connections report their statistics when idle)
for who in a b; do
  psql -X -q -At -F ' | ' -v ON_ERROR_STOP=1 -d "$PG_BASE/sesame_bench_ab_$who" -c "
    SELECT '$who', relname, n_live_tup, n_tup_upd, n_tup_hot_upd,
           round(pg_table_size(relid) / 1048576.0, 1), round(pg_indexes_size(relid) / 1048576.0, 1)
    FROM pg_stat_user_tables WHERE relname IN ('sessions', 'refresh_tokens') ORDER BY relname"
done >"$out/tables.txt"
python3 - "$out" "$rounds" "${scenarios[@]}" <<'PY' | tee "$out/table.md"
import json, sys, pathlib, statistics
out, rounds, scenarios = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
print((out / "facts.txt").read_text())
print("| scenario | round | A ops/s | B ops/s | A p99 ms | B p99 ms |")
print("|---|---|---|---|---|---|")
summary, errors = [], 0
for s in scenarios:
    runs = {w: [json.loads((out / f"{w}-{s}-{r}.json").read_text()) for r in range(1, rounds + 1)] for w in "ab"}
    for r in range(rounds):
        a, b = runs["a"][r], runs["b"][r]
        print(f'| {s} | {r + 1} | {a["operationsPerSecond"]:.0f} | {b["operationsPerSecond"]:.0f} | '
              f'{a["latencyMs"]["p99"]:.2f} | {b["latencyMs"]["p99"]:.2f} |')
    med = {w: statistics.median(j["operationsPerSecond"] for j in runs[w]) for w in "ab"}
    p99 = {w: statistics.median(j["latencyMs"]["p99"] for j in runs[w]) for w in "ab"}
    # Each round's B against the A it ran next to, then the median of those.
    paired = lambda f: statistics.median(f(b) / f(a) for a, b in zip(runs["a"], runs["b"]))
    ops_ratio = paired(lambda j: j["operationsPerSecond"])
    p99_ratio = paired(lambda j: j["latencyMs"]["p99"])
    errors += sum(j["errors"] for w in "ab" for j in runs[w])
    summary.append(f'| {s} | {med["a"]:.0f} | {med["b"]:.0f} | {ops_ratio:.2f} | '
                   f'{p99["a"]:.2f} | {p99["b"]:.2f} | {p99_ratio:.2f} |')
print("\n| build | table | live rows | updates | heap-only updates | table MB | indexes MB |")
print("|---|---|---|---|---|---|---|")
for line in (out / "tables.txt").read_text().splitlines():
    print("| " + line.upper()[:1] + line[1:] + " |")
print("\nMedians over the rounds (B / A: the median of each round's B / A):\n")
print("| scenario | A ops/s | B ops/s | B / A | A p99 ms | B p99 ms | B / A |")
print("|---|---|---|---|---|---|---|")
print("\n".join(summary))
print(f'\nerrors: {errors}')
PY
echo "results in $out" >&2
