#!/usr/bin/env bash
# The database's own limit for sesame's refresh: pgbench replays the same
# statements a refresh runs (rate-limit upsert; BEGIN; lock the session; rotate
# the token, insert its child and slide the session in one statement; insert the
# three audit rows; COMMIT), each client chaining its own tokens, at the same
# concurrency. Also pgbench's built-in select-only load (-S), the ceiling for
# /auth/me. Prints two lines: "refresh_tps N" and "select_tps N".
#
#   bench/pg-limit.sh [concurrency] [seconds]      (PG_BASE, SESAME_BIN from the environment)
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-16}
seconds=${2:-15}
PG_BASE=${PG_BASE:-$(scripts/pg.sh start)}
SESAME_BIN=${SESAME_BIN:-${CARGO_TARGET_DIR:-target}/release/sesame}
port=${PG_BASE##*:}
psql_() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

db=sesame_pgbench
psql_ -d "$PG_BASE/postgres" -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
DATABASE_URL=$PG_BASE/$db RUST_LOG=warn "$SESAME_BIN" migrate >/dev/null 2>&1
sessions=$((clients * 4))
psql_ -d "$PG_BASE/$db" >/dev/null <<SQL
INSERT INTO users (id, email) SELECT gen_random_uuid(), 'pgbench' || n || '@bench.test' FROM generate_series(1, $sessions) n;
INSERT INTO sessions (id, user_id, expires_at)
  SELECT gen_random_uuid(), id, now() + interval '30 days' FROM users;
INSERT INTO refresh_tokens (id, token_hash, session_id, expires_at)
  SELECT gen_random_uuid(), sha256(convert_to(split_part(split_part(u.email, '@', 1), 'pgbench', 2) || ':0', 'UTF8')), s.id, now() + interval '30 days'
  FROM sessions s JOIN users u ON u.id = s.user_id;
SQL

script=$(mktemp)
trap 'rm -f "$script"' EXIT
cat > "$script" <<'SQL'
\set n :client_id + 1
\set c :k + 1
INSERT INTO rate_limits (bucket, subject, window_start, hits, expires_at)
  VALUES ('refresh_per_ip_minute', sha256(convert_to('ip:' || :n, 'UTF8')), now(), 1, now() + interval '1 minute')
  ON CONFLICT (bucket, subject) DO UPDATE SET
    window_start = CASE WHEN rate_limits.expires_at <= now() THEN EXCLUDED.window_start ELSE rate_limits.window_start END,
    hits = CASE WHEN rate_limits.expires_at <= now() THEN 1 ELSE rate_limits.hits + 1 END,
    expires_at = CASE WHEN rate_limits.expires_at <= now() THEN EXCLUDED.expires_at ELSE rate_limits.expires_at END
  RETURNING bucket, hits, expires_at;
BEGIN;
SELECT s.id, s.created_at, s.expires_at, s.revoked_at IS NOT NULL, u.id, u.email, u.created_at
  FROM sessions s JOIN users u ON u.id = s.user_id
  WHERE s.id = (SELECT session_id FROM refresh_tokens WHERE token_hash = sha256(convert_to(:n || ':' || :k, 'UTF8')))
  FOR UPDATE OF s;
WITH parent AS (
    UPDATE refresh_tokens SET rotated_at = now(), revoked_at = now()
    WHERE token_hash = sha256(convert_to(:n || ':' || :k, 'UTF8')) AND rotated_at IS NULL AND revoked_at IS NULL AND expires_at > now()
    RETURNING id, session_id
), child AS (
    INSERT INTO refresh_tokens (id, token_hash, session_id, parent_id, issued_at, expires_at)
    SELECT gen_random_uuid(), sha256(convert_to(:n || ':' || :c, 'UTF8')), session_id, id, now(), now() + interval '30 days' FROM parent
    RETURNING session_id
), session AS (
    UPDATE sessions SET last_used_at = now(), expires_at = now() + interval '30 days' WHERE id = (SELECT session_id FROM parent)
)
SELECT count(*) > 0 FROM child;
INSERT INTO audit_events (event, success, user_id, email, metadata, ip, request_id, created_at)
  SELECT e, true, gen_random_uuid(), 'pgbench' || :n || '@bench.test', m::jsonb, '127.0.0.1', gen_random_uuid()::text, now()
  FROM (VALUES ('token.refresh', '{"sessionId":"x"}'),
               ('token.generated', '{"tokenType":"access","source":"refresh","expiresIn":"1h","sessionId":"x"}'),
               ('token.generated', '{"tokenType":"refresh","source":"refresh","expiresIn":"30d","sessionId":"x"}')) v(e, m);
COMMIT;
\set k :k + 1
SQL

refresh=$(pgbench -h 127.0.0.1 -p "$port" -U postgres -n -M prepared -c "$clients" -j 2 -T "$seconds" -D k=0 -f "$script" "$db" 2>&1)
echo "$refresh" | grep -q "number of failed transactions: 0" || { echo "$refresh" >&2; exit 1; }
# The replay must really rotate: one rotated parent and one child per transaction. A broken
# chain (a hash that matches no token) would time transactions that change no row.
processed=$(echo "$refresh" | awk -F': *' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1] + 0 }')
rotated=$(psql_ -At -d "$PG_BASE/$db" -c "SELECT count(*) FROM refresh_tokens WHERE rotated_at IS NOT NULL")
children=$(psql_ -At -d "$PG_BASE/$db" -c "SELECT count(*) FROM refresh_tokens WHERE parent_id IS NOT NULL")
if [ "${processed:-0}" -eq 0 ] || [ "$rotated" != "$processed" ] || [ "$children" != "$processed" ]; then
  echo "sesame: pgbench processed ${processed:-no} transactions but rotated $rotated tokens and created $children children" >&2
  exit 1
fi
echo "refresh_tps $(echo "$refresh" | awk '/^tps = / {printf "%d", $3}')"

sdb=sesame_pgbench_select
psql_ -d "$PG_BASE/postgres" -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $sdb WITH (FORCE)" -c "CREATE DATABASE $sdb" >/dev/null
pgbench -h 127.0.0.1 -p "$port" -U postgres -i -q -s 10 "$sdb" >/dev/null 2>&1
select=$(pgbench -h 127.0.0.1 -p "$port" -U postgres -n -M prepared -S -c "$clients" -j 2 -T "$seconds" "$sdb" 2>&1)
echo "select_tps $(echo "$select" | awk '/^tps = / {printf "%d", $3}')"
