#!/usr/bin/env bash
# How fast the audit trail answers on a seeded year: seeds a fresh database with bench/seed,
# brings the hourly counts up to date as the server's cleanup job does (`sesame cleanup`; on a
# fresh scale-1 seed that counts the year, about 13 minutes), then runs every query of
# docs/audit-queries.sql (as `sesame audit summary` does, over 24 hours, 7 days and 30 days), the queries of `sesame audit tail` and of the admin audit listing
# (GET /admin/audit) with each filter, the dashboard's counts, a look-up by id and the
# erasure's search, each with EXPLAIN (ANALYZE, BUFFERS), best of RUNS runs (warm cache).
# Prints one line per query (time, buffers, plan root); the full plans go to $OUT.
#
#   bench/audit-queries.sh [--scale F] [--no-seed]
#
# --scale: passed to bench/seed (default 0.01; 1 is the full year: 30 M events, about
# 22 GB; the 0.03 seed took 89 s on the shared machine). --no-seed reuses the database
# of the last run; with SEED_FROM=DATABASE the seed is a copy of that seeded database
# (bench/lib.sh's seed_db). Environment: PG_BASE (postgres://user@host:port, no database; default:
# scripts/pg.sh start), SESAME_BIN (default target/debug/sesame, for `sesame migrate`),
# DB (default sesame_audit_bench), RUNS (default 3), OUT (default /tmp/sesame-audit-plans.txt).
# SESAME_BIN must be built from this checkout: it carries the migrations it applies.
# The target (issue 16) is under 100 ms per query at scale 1.
set -euo pipefail
cd "$(dirname "$0")/.."
scale=0.01
seed=1
while [ $# -gt 0 ]; do
  case $1 in
    --scale) scale=$2; shift 2 ;;
    --no-seed) seed=0; shift ;;
    *) echo "usage: bench/audit-queries.sh [--scale F] [--no-seed]" >&2; exit 2 ;;
  esac
done
PG_BASE=${PG_BASE:-$(scripts/pg.sh start)}
SESAME_BIN=${SESAME_BIN:-${CARGO_TARGET_DIR:-target}/debug/sesame}
DB=${DB:-sesame_audit_bench}
RUNS=${RUNS:-3}
OUT=${OUT:-/tmp/sesame-audit-plans.txt}
url=$PG_BASE/$DB
# seed_db
. bench/lib.sh
psql_() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

if [ "$seed" = 1 ]; then
  seed_db "$DB" "$scale" "$SESAME_BIN"
  # What autovacuum does to an insert-only table after a while: the visibility map lets
  # index-only scans skip the heap.
  psql_ -d "$url" -c "VACUUM ANALYZE audit_events"
fi
DATABASE_URL=$url RUST_LOG=warn "$SESAME_BIN" cleanup >/dev/null
rolled=$(psql_ -d "$url" -At -c "SELECT coalesce((SELECT rolled_until::text FROM audit_stats_progress), 'nothing')")

# Parameters drawn from the data: a person with events, a row id half-way, a day 200 days ago.
read -r user email mid <<<"$(psql_ -d "$url" -At -F ' ' -c "
  SELECT user_id, email, (SELECT (min(id) + max(id)) / 2 FROM audit_events)
  FROM audit_events WHERE event = 'auth.login' AND email IS NOT NULL ORDER BY id DESC LIMIT 1")"
# (Literal times, as the app binds them: the planner prunes partitions with them.)
day=$(psql_ -d "$url" -At -c "SELECT now() - interval '200 days'")
next_day=$(psql_ -d "$url" -At -c "SELECT timestamptz '$day' + interval '1 day'")

# name|SQL (the statements of src/store/audit.rs with their parameters filled in; the
# NULL filters as the app sends them).
columns="id, event, success, user_id, email, error, metadata, ip, user_agent, request_id, created_at"
list_page() { # event user email since until before
  echo "SELECT $columns FROM audit_events
        WHERE ($6::bigint IS NULL OR id < $6) AND ($1::text IS NULL OR event = $1)
          AND ($2::uuid IS NULL OR user_id = $2) AND ($3::text IS NULL OR lower(email) = lower(btrim($3)))
          AND ($4::timestamptz IS NULL OR created_at >= $4) AND ($5::timestamptz IS NULL OR created_at < $5)
        ORDER BY id DESC LIMIT 51"
}
tail_() { # event user email
  echo "SELECT * FROM (SELECT $columns FROM audit_events
        WHERE id > 0 AND ($1::text IS NULL OR event = $1) AND ($2::uuid IS NULL OR user_id = $2)
          AND ($3::text IS NULL OR lower(email) = lower(btrim($3)))
        ORDER BY id DESC LIMIT 20) newest ORDER BY id"
}
queries=()
for window in '24 hours' '7 days' '30 days'; do
  while IFS= read -r -d '' block; do
    name=$(sed -n 's/^-- name: //p' <<<"$block")
    sql=$(grep -v '^--' <<<"$block" | sed "s/:'since'/'$window'/g")
    queries+=("summary $name ($window)|$sql")
  done < <(awk '/^-- name: / { if (q != "") printf "%s%c", q, 0; q = ""; on = 1 } on { q = q $0 "\n" } END { if (q != "") printf "%s%c", q, 0 }' docs/audit-queries.sql)
done
queries+=(
  "tail|$(tail_ NULL NULL NULL)"
  "tail --event token.refresh|$(tail_ "'token.refresh'" NULL NULL)"
  "tail --event admin.user.deleted|$(tail_ "'admin.user.deleted'" NULL NULL)"
  "tail --user|$(tail_ NULL "'$user'" NULL)"
  "tail --email|$(tail_ NULL NULL "'$email'")"
  "admin list|$(list_page NULL NULL NULL NULL NULL NULL)"
  "admin list, page half-way|$(list_page NULL NULL NULL NULL NULL "$mid")"
  "admin list event=token.refresh|$(list_page "'token.refresh'" NULL NULL NULL NULL NULL)"
  "admin list event=token.reuse_detected|$(list_page "'token.reuse_detected'" NULL NULL NULL NULL NULL)"
  "admin list event=admin.user.deleted|$(list_page "'admin.user.deleted'" NULL NULL NULL NULL NULL)"
  "admin list userId|$(list_page NULL "'$user'" NULL NULL NULL NULL)"
  "admin list email|$(list_page NULL NULL "'$email'" NULL NULL NULL)"
  "admin list one day, 200 days ago|$(list_page NULL NULL NULL "'$day'" "'$next_day'" NULL)"
  "admin list event + day|$(list_page "'auth.login'" NULL NULL "'$day'" "'$next_day'" NULL)"
  "dashboard stats 24 h|SELECT date_bin(interval '1 hour', created_at, timestamptz 'epoch'), event, count(*) FROM audit_events
     WHERE event IN ('otp.sent', 'magic_link.sent', 'auth.login', 'otp.verification', 'magic_link.verification', 'token.refresh',
                     'token.reuse_detected', 'rate_limit.exceeded', 'user.created')
       AND created_at >= now() - interval '24 hours' AND created_at <= now() GROUP BY 1, 2"
  "event by id (outbox join)|SELECT a.* FROM audit_events a WHERE a.id = $mid"
  "erasure: ips of a person|SELECT DISTINCT ip FROM audit_events WHERE (user_id = '$user' OR lower(email) = lower('$email')) AND ip IS NOT NULL"
)

: >"$OUT"
rows=$(psql_ -d "$url" -At -c "SELECT count(*) FROM audit_events")
partitions=$(psql_ -d "$url" -At -c "SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_events'::regclass")
if [ "$seed" = 1 ]; then seeded="seed scale $scale"; else seeded="seeded earlier"; fi
printf 'audit_events: %s rows in %s partitions (%s), hourly counts up to %s; best of %s runs; load average %s\n\n' \
  "$rows" "$partitions" "$seeded" "$rolled" "$RUNS" "$(cut -d ' ' -f 1-3 /proc/loadavg)"
printf '%-48s %10s %10s  %s\n' query ms buffers "plan root"
for entry in "${queries[@]}"; do
  name=${entry%%|*}
  sql=${entry#*|}
  best=
  for ((i = 0; i < RUNS; i++)); do
    plan=$(psql_ -d "$url" -At -c "EXPLAIN (ANALYZE, BUFFERS) $sql")
    ms=$(sed -n 's/^Execution Time: \([0-9.]*\) ms$/\1/p' <<<"$plan")
    if [ -z "$best" ] || awk -v a="$ms" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$ms; best_plan=$plan; fi
  done
  buffers=$(awk '/Buffers:/ { for (i = 1; i <= NF; i++) if ($i ~ /^(hit|read)=/) { split($i, kv, "="); n += kv[2] } exit } END { print n + 0 }' <<<"$best_plan")
  root=$(head -n 1 <<<"$best_plan" | sed 's/  (cost=.*//; s/^ *//')
  printf '%-48s %10s %10s  %s\n' "$name" "$best" "$buffers" "$root"
  printf '== %s\n%s\n\n%s\n\n' "$name" "$sql" "$best_plan" >>"$OUT"
done
echo
echo "plans: $OUT"
