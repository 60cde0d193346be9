#!/usr/bin/env bash
# How long does the operators' dashboard take to load on a large audit table? Starts
# sesame on a fresh database (start-up applies the migrations), seeds `rows` audit
# events spread over the last 30 days (a mix like a busy service's: mostly refreshes
# and issued tokens, some sign-ins, failures, refusals and new users), ANALYZEs, then
# times with curl, `runs` times each:
#   - GET /admin/stats for each window of the page (1h/1m, 24h/1h, 7d/6h, 30d/1d);
#   - a page load at the default window: /dashboard, then app.js and app.css, then
#     /admin/stats?since=24h&bucket=1h and /admin/audit?limit=20 (what the page
#     requests), one after the other (the browser overlaps them, so this is an upper bound);
# twice: first from the raw events (as before the cleanup job's first run), then after
# `sesame cleanup` rolled the seeded hours up (the statistics read whole past hours from
# `audit_counts_hourly`); and keeps EXPLAIN (ANALYZE, BUFFERS) of the 30-day query, as the
# endpoint runs it (its SQL is read from src/store/audit_stats.rs), in both states. Raw
# timings, the plans and a Markdown table go to bench/results/<UTC date-time>-dashboard/.
# Loopback only.
#
#   bench/dashboard.sh [rows (1000000)] [runs (11)]
#   SESAME_BIN=target/debug/sesame bench/dashboard.sh …   measure another build
#   KEEP=1 bench/dashboard.sh …                          keep the seeded database afterwards
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
runs=${2:-11}
PG_BASE=${PG_BASE:-$(scripts/pg.sh start)}
target=${CARGO_TARGET_DIR:-target}
if [ -z "${SESAME_BIN:-}" ]; then
  SESAME_BIN=$target/release/sesame
  cargo build --release --locked --quiet --bin sesame
fi
out=bench/results/$(date -u +%Y-%m-%dT%H%MZ)-dashboard
mkdir -p "$out"
db=sesame_bench_dashboard
token=bench-admin-token-0123456789abcdef0123
psql_() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

psql_ -d "$PG_BASE/postgres" -c "SET client_min_messages = warning" \
  -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
port=$(free_port); admin=$(free_port)
env -i PATH="$PATH" HOME="$HOME" DATABASE_URL="$PG_BASE/$db" HOST=127.0.0.1 PORT="$port" \
  ADMIN_PORT="$admin" ADMIN_TOKEN="$token" CLEANUP_INTERVAL=24h RUST_LOG=warn LOG_FORMAT=json METRICS_FORMAT=none \
  "$SESAME_BIN" serve >"$out/dashboard-server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ] && break
  kill -0 "$server" || { cat "$out/dashboard-server.log" >&2; exit 1; }
  sleep 0.1
done

echo "seeding $rows audit events…" >&2
seed_started=$(date +%s)
psql_ -d "$PG_BASE/$db" <<SQL
INSERT INTO audit_events (event, success, user_id, email, error, metadata, created_at)
SELECT k.event, k.success,
       CASE WHEN k.event <> 'rate_limit.exceeded' THEN md5((g % 50000)::text)::uuid END,
       'user' || (g % 50000) || '@example.com', k.error, k.metadata,
       now() - random() * interval '30 days'
FROM generate_series(1, $rows) AS g,
LATERAL (SELECT * FROM (VALUES
    (g % 100 < 39,                'token.refresh', true, NULL, jsonb_build_object('sessionId', md5(g::text)::uuid)),
    (g % 100 = 39,                'token.refresh', false, 'Session ended', NULL),
    (g % 100 BETWEEN 40 AND 59,   'token.generated', true, NULL, jsonb_build_object('tokenType', 'access', 'source', 'refresh')),
    (g % 100 BETWEEN 60 AND 65,   'auth.login', true, NULL, jsonb_build_object('method', 'otp', 'sessionId', md5(g::text)::uuid)),
    (g % 100 = 66,                'auth.login', true, NULL, jsonb_build_object('method', 'magic-link', 'sessionId', md5(g::text)::uuid)),
    (g % 100 BETWEEN 67 AND 72,   'otp.sent', true, NULL, NULL),
    (g % 100 BETWEEN 73 AND 78,   'otp.generated', true, NULL, jsonb_build_object('emailDomain', 'example.com')),
    (g % 100 BETWEEN 79 AND 83,   'otp.verification', true, NULL, NULL),
    (g % 100 = 84,                'otp.verification', false, 'Invalid code', jsonb_build_object('attempts', 1)),
    (g % 100 = 85,                'otp.verification.detail', false, 'Invalid code', jsonb_build_object('attempts', 1)),
    (g % 100 = 86,                'magic_link.sent', true, NULL, NULL),
    (g % 100 = 87,                'magic_link.generated', true, NULL, jsonb_build_object('emailDomain', 'example.com')),
    (g % 100 = 88,                'magic_link.verification', true, NULL, NULL),
    (g % 100 = 89,                'magic_link.verification', false, 'Link expired', NULL),
    (g % 100 BETWEEN 90 AND 91,   'user.created', true, NULL, jsonb_build_object('method', 'otp')),
    (g % 100 = 92,                'rate_limit.exceeded', false, 'rate limited', jsonb_build_object('limit', 'verify_per_ip_minute')),
    (g % 100 = 93,                'token.reuse_detected', false, 'Refresh token reused', jsonb_build_object('sessionId', md5(g::text)::uuid)),
    (g % 100 >= 94,               'auth.logout', true, NULL, jsonb_build_object('sessionId', md5(g::text)::uuid))
  ) AS v(pick, event, success, error, metadata) WHERE pick) AS k;
VACUUM ANALYZE audit_events;
SQL
seed_seconds=$(( $(date +%s) - seed_started ))
count=$(psql_ -d "$PG_BASE/$db" -c "SELECT count(*) FROM audit_events")
size=$(psql_ -d "$PG_BASE/$db" -c "SELECT pg_size_pretty(sum(pg_total_relation_size(relid))) FROM pg_partition_tree('audit_events')")

# median_ms URL...: the median over $runs of the summed time_total of the URLs, in ms.
median_ms() {
  local i url total t
  for i in $(seq "$runs"); do
    total=0
    for url in "$@"; do
      t=$(curl -s -o /dev/null -w '%{time_total}' -H "Authorization: Bearer $token" "$url")
      total=$(python3 -c "print($total + $t)")
    done
    echo "$total"
  done | tee -a "$out/raw.txt" | sort -g | python3 -c 'import sys; xs=[float(l) for l in sys.stdin]; print(round(1000*xs[len(xs)//2], 1))'
}

base=http://127.0.0.1:$admin
# The endpoint's statement, prepared with the 30-day window's parameters, explained.
explain_30d() {
  python3 - <<'PY'
import re, sys
src = open("src/store/audit_stats.rs").read()
body = src[src.index("pub async fn stats("):]
sql = re.search(r'r#"(.*?)"#', body, re.S).group(1)
print("PREPARE stats(timestamptz, timestamptz, float8, timestamptz, timestamptz, bool) AS" + sql + ";")
print("""EXPLAIN (ANALYZE, BUFFERS) EXECUTE stats(now() - interval '30 days', now(), 86400,
  date_bin('1 hour', now() - interval '30 days', timestamptz 'epoch') + interval '1 hour',
  date_bin('1 hour', now(), timestamptz 'epoch'), true);""")
PY
}
# timings LABEL: one column of medians, a line per request.
timings() {
  local w
  for w in 1h:1m 24h:1h 7d:6h 30d:1d; do
    echo "== $1 stats ${w%:*} ${w#*:}" >>"$out/raw.txt"
    median_ms "$base/admin/stats?since=${w%:*}&bucket=${w#*:}"
  done
  echo "== $1 page" >>"$out/raw.txt"
  median_ms "$base/dashboard" "$base/dashboard/app.js" "$base/dashboard/app.css" "$base/admin/stats?since=24h&bucket=1h" "$base/admin/audit?limit=20"
}
# The server's cleanup job ran once, 30 s after start (then not for 24 h): forget its
# rollups, so the first column is measured on raw events only.
psql_ -d "$PG_BASE/$db" -c "TRUNCATE audit_counts_hourly, audit_stats_progress"
explain_30d | psql_ -d "$PG_BASE/$db" >"$out/explain-30d-raw.txt"
mapfile -t raw < <(timings raw)
rollup_started=$(date +%s%N)
env -i PATH="$PATH" HOME="$HOME" DATABASE_URL="$PG_BASE/$db" RUST_LOG=warn "$SESAME_BIN" cleanup >"$out/cleanup.txt"
rollup_ms=$(( ($(date +%s%N) - rollup_started) / 1000000 ))
hours=$(psql_ -d "$PG_BASE/$db" -c "SELECT count(DISTINCT hour) || ' hours, ' || count(*) || ' rows' FROM audit_counts_hourly")
explain_30d | psql_ -d "$PG_BASE/$db" >"$out/explain-30d.txt"
mapfile -t rolled < <(timings rollups)
{
  echo "| request | raw events: median (ms), $runs runs | after the roll-up: median (ms), $runs runs |"
  echo "|---|---|---|"
  i=0
  for w in 1h:1m 24h:1h 7d:6h 30d:1d; do
    echo "| \`GET /admin/stats?since=${w%:*}&bucket=${w#*:}\` | ${raw[i]} | ${rolled[i]} |"
    i=$((i + 1))
  done
  echo "| page load at 24h: \`/dashboard\`, \`app.js\`, \`app.css\`, \`/admin/stats?since=24h&bucket=1h\`, \`/admin/audit?limit=20\`, in sequence | ${raw[4]} | ${rolled[4]} |"
  echo
  echo "$count audit events ($size with indexes), seeded in ${seed_seconds}s; the first \`sesame cleanup\` rolled them up in ${rollup_ms} ms ($hours); sesame: $SESAME_BIN; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) after."
} | tee "$out/table.md"
tail -n 3 "$out/explain-30d.txt" >&2
kill "$server"; wait "$server" 2>/dev/null || true
# KEEP=1 keeps the seeded database (sesame_bench_dashboard) to look at the plans.
[ "${KEEP:-}" = 1 ] || psql_ -d "$PG_BASE/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
echo "results in $out" >&2
