#!/usr/bin/env bash
# The database's own limits, at the same concurrency as the load:
# - refresh_tps: pgbench replays the SQL of sesame's refresh (its common path
#   is one statement, store::sessions::rotate_live: lock the session, retire
#   the token, insert its child, slide the session, insert the three audit
#   rows; rate limits and the file outbox off, as in the tuned run), each
#   client chaining its own tokens;
# - rotation_tps: the minimal rotation any server must do, in BEGIN … COMMIT:
#   UPDATE a token found by its SHA-256 hash setting revoked_at where it is
#   neither revoked nor expired, INSERT the child, INSERT one audit row; on
#   sesame's tables, over ROTATION_TOKENS (1 000 000) live tokens;
# - rotation3_tps: the minimal rotation writing the three audit rows a refresh
#   records (token.refresh and the two token.generated) in its one INSERT;
# - contract_tps: that, plus the session's slide sesame's contract requires
#   (UPDATE the session, live, setting last_used_at and expires_at, first, so
#   the session is locked before the token as sesame locks it): what separates
#   the minimal rotation from sesame's statement, counted step by step;
# - select_tps: pgbench's built-in select-only load (-S), the ceiling for /auth/me.
# Every load runs with -M prepared. Prints "refresh_tps N", "rotation_tps N",
# "rotation3_tps N", "contract_tps N", "select_tps N". Drops its databases at the end.
#
#   bench/pg-limit.sh [concurrency] [seconds]      (PG_BASE, SESAME_BIN, ROTATION_TOKENS from the environment)
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-16}
seconds=${2:-15}
tokens=${ROTATION_TOKENS:-1000000}
PG_BASE=${PG_BASE:-$(scripts/pg.sh start)}
SESAME_BIN=${SESAME_BIN:-${CARGO_TARGET_DIR:-target}/release/sesame}
port=${PG_BASE##*:}
psql_() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
db=sesame_pgbench
sdb=sesame_pgbench_select
script=$(mktemp)
cleanup() {
  rm -f "$script"
  psql_ -d "$PG_BASE/postgres" -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "DROP DATABASE IF EXISTS $sdb WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
pgbench_() { pgbench -h 127.0.0.1 -p "$port" -U postgres -n -M prepared -c "$clients" -j 2 -T "$seconds" "$@" 2>&1; }
tps() { awk '/^tps = / {printf "%d", $3}'; }
processed() { awk -F': *' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1] + 0 }'; }

psql_ -d "$PG_BASE/postgres" -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
DATABASE_URL=$PG_BASE/$db RUST_LOG=warn "$SESAME_BIN" migrate >/dev/null 2>&1
# Client n's session (its id derived from n) and first token, for both loads:
# 'r<n>:<k>' is the k-th token of the replay's chain, 'm<n>:<k>' the minimal one's,
# 'a<n>:<k>' and 'b<n>:<k>' those of the minimal one with three audit rows and with the slide.
sessions=$((clients * 4))
psql_ -d "$PG_BASE/$db" >/dev/null <<SQL
INSERT INTO users (id, email) SELECT md5('u' || n)::uuid, 'pgbench' || n || '@bench.test' FROM generate_series(1, $sessions) n;
INSERT INTO sessions (id, user_id, expires_at)
  SELECT md5('s' || n)::uuid, md5('u' || n)::uuid, now() + interval '30 days' FROM generate_series(1, $sessions) n;
INSERT INTO refresh_tokens (id, token_hash, session_id, expires_at, rotation_salt)
  SELECT gen_random_uuid(), sha256(convert_to(c || n || ':0', 'UTF8')), md5('s' || n)::uuid, now() + interval '30 days',
         sha256(convert_to(random()::text, 'UTF8'))
  FROM generate_series(1, $sessions) n CROSS JOIN (VALUES ('r'), ('m'), ('a'), ('b')) v(c);
SQL

# The replay of store::sessions::rotate_live, as sesame sends it.
cat > "$script" <<'SQL'
\set n :client_id + 1
\set c :k + 1
WITH locked AS (
    SELECT s.id AS session_id, u.id AS user_id, u.email, u.created_at AS user_created_at
    FROM refresh_tokens t
    JOIN sessions s ON s.id = t.session_id
    JOIN users u ON u.id = s.user_id
    WHERE t.token_hash = sha256(convert_to('r' || :n || ':' || :k, 'UTF8')) AND s.revoked_at IS NULL AND s.expires_at > now()
      AND (NULL::timestamptz IS NULL OR s.created_at >= NULL::timestamptz)
    FOR UPDATE OF s
), parent AS (
    UPDATE refresh_tokens SET rotated_at = now(), revoked_at = now(), rotation_salt = sha256(convert_to(random()::text, 'UTF8'))
    WHERE token_hash = sha256(convert_to('r' || :n || ':' || :k, 'UTF8')) AND session_id = (SELECT session_id FROM locked)
      AND rotated_at IS NULL AND revoked_at IS NULL AND expires_at > now() AND rotation_salt IS NOT NULL
    RETURNING id, session_id
), child AS (
    INSERT INTO refresh_tokens (id, token_hash, session_id, parent_id, issued_at, expires_at, rotation_salt)
    SELECT gen_random_uuid(), sha256(convert_to('r' || :n || ':' || :c, 'UTF8')), session_id, id, now(), now() + interval '30 days',
           sha256(convert_to(random()::text, 'UTF8'))
    FROM parent
), session AS (
    UPDATE sessions SET last_used_at = now(), expires_at = now() + interval '30 days'
    WHERE id = (SELECT session_id FROM parent)
), rotated AS (
    SELECT locked.* FROM locked WHERE EXISTS (SELECT FROM parent)
), inserted AS (
    INSERT INTO audit_events (event, success, user_id, email, error, metadata, ip, user_agent, request_id, created_at)
    SELECT x.e, x.s, r.user_id, r.email, x.er, x.md || jsonb_build_object('sessionId', r.session_id::text), x.i, x.a, x.rq, x.t
    FROM rotated r CROSS JOIN unnest(
        ARRAY['token.refresh', 'token.generated', 'token.generated'], ARRAY[true, true, true], ARRAY[NULL, NULL, NULL]::text[],
        ARRAY['{}', '{"tokenType":"access","source":"refresh","expiresIn":"1h"}', '{"tokenType":"refresh","source":"refresh","expiresIn":"30d"}']::jsonb[],
        ARRAY['127.0.0.1', '127.0.0.1', '127.0.0.1']::inet[], ARRAY[NULL, NULL, NULL]::text[],
        ARRAY[gen_random_uuid()::text, gen_random_uuid()::text, gen_random_uuid()::text], ARRAY[now(), now(), now()])
        WITH ORDINALITY AS x(e, s, er, md, i, a, rq, t, n)
    ORDER BY x.n
    RETURNING id, event, created_at
), hooks AS (
    INSERT INTO webhook_deliveries (event_id, endpoint, next_attempt_at, retry_since, created_at)
    SELECT inserted.id, endpoint, inserted.created_at, inserted.created_at, inserted.created_at
    FROM inserted CROSS JOIN unnest(ARRAY[]::text[]) AS endpoints(endpoint)
    WHERE false OR inserted.event = ANY(ARRAY[]::text[])
    ORDER BY inserted.id, endpoint
), file AS (
    INSERT INTO audit_file_pending (writer, event_id, boot, more_ids)
    SELECT NULL::uuid, ids[1], NULL::uuid, NULLIF(ids[2:], '{}')
    FROM (SELECT array_agg(id ORDER BY id) AS ids FROM inserted) AS tx
    WHERE NULL::uuid IS NOT NULL AND ids IS NOT NULL
)
SELECT session_id, user_id, email, user_created_at, ARRAY(SELECT id FROM inserted ORDER BY id) FROM rotated;
\set k :k + 1
SQL
refresh=$(pgbench_ -D k=0 -f "$script" "$db")
# check_chain OUTPUT RETIRED-SQL [RETIRED-BEFORE]: the load really rotated, one retired
# token per transaction (a broken chain would time transactions that change nothing).
check_chain() {
  echo "$1" | grep -q "number of failed transactions: 0" || { echo "$1" >&2; exit 1; }
  local done retired
  done=$(echo "$1" | processed)
  retired=$(psql_ -At -d "$PG_BASE/$db" -c "SELECT count(*) - ${3:-0} FROM refresh_tokens WHERE $2")
  if [ "${done:-0}" -eq 0 ] || [ "$retired" != "$done" ]; then
    echo "sesame: pgbench processed ${done:-no} transactions but retired $retired tokens ($2)" >&2
    exit 1
  fi
}
check_chain "$refresh" "rotated_at IS NOT NULL"
echo "refresh_tps $(echo "$refresh" | tps)"

# The minimal rotation, over $tokens live tokens (set-based, on sesame's tables).
psql_ -d "$PG_BASE/$db" >/dev/null <<SQL
INSERT INTO refresh_tokens (id, token_hash, session_id, expires_at)
  SELECT gen_random_uuid(), sha256(convert_to('f' || i, 'UTF8')), md5('s' || (1 + i % $sessions))::uuid, now() + interval '30 days'
  FROM generate_series(1, $tokens) i;
VACUUM ANALYZE refresh_tokens;
SQL
cat > "$script" <<'SQL'
\set n :client_id + 1
\set c :k + 1
BEGIN;
UPDATE refresh_tokens SET revoked_at = now()
  WHERE token_hash = sha256(convert_to('m' || :n || ':' || :k, 'UTF8')) AND revoked_at IS NULL AND expires_at > now();
INSERT INTO refresh_tokens (id, token_hash, session_id, issued_at, expires_at)
  VALUES (gen_random_uuid(), sha256(convert_to('m' || :n || ':' || :c, 'UTF8')), md5('s' || :n)::uuid, now(), now() + interval '30 days');
INSERT INTO audit_events (event, success, user_id, email, metadata, ip, request_id, created_at)
  VALUES ('token.refresh', true, md5('u' || :n)::uuid, 'pgbench' || :n || '@bench.test', '{"sessionId":"x"}', '127.0.0.1', gen_random_uuid()::text, now());
COMMIT;
\set k :k + 1
SQL
rotation=$(pgbench_ -D k=0 -f "$script" "$db")
check_chain "$rotation" "revoked_at IS NOT NULL AND rotated_at IS NULL"
echo "rotation_tps $(echo "$rotation" | tps)"

# The minimal rotation with the writes sesame's contract adds, one step at a time: the
# audit rows a refresh records (three, in one INSERT), then the session's slide.
audit3="INSERT INTO audit_events (event, success, user_id, email, metadata, ip, request_id, created_at) VALUES
  ('token.refresh', true, md5('u' || :n)::uuid, 'pgbench' || :n || '@bench.test', '{\"sessionId\":\"x\"}', '127.0.0.1', gen_random_uuid()::text, now()),
  ('token.generated', true, md5('u' || :n)::uuid, 'pgbench' || :n || '@bench.test', '{\"tokenType\":\"access\",\"source\":\"refresh\",\"expiresIn\":\"1h\",\"sessionId\":\"x\"}', '127.0.0.1', gen_random_uuid()::text, now()),
  ('token.generated', true, md5('u' || :n)::uuid, 'pgbench' || :n || '@bench.test', '{\"tokenType\":\"refresh\",\"source\":\"refresh\",\"expiresIn\":\"30d\",\"sessionId\":\"x\"}', '127.0.0.1', gen_random_uuid()::text, now());"
# rotation_with CHAIN-LETTER [SLIDE]: the minimal rotation's script with three audit rows.
rotation_with() {
  echo '\set n :client_id + 1'
  echo '\set c :k + 1'
  echo 'BEGIN;'
  [ -z "${2:-}" ] || echo "UPDATE sessions SET last_used_at = now(), expires_at = now() + interval '30 days'
  WHERE id = md5('s' || :n)::uuid AND revoked_at IS NULL;"
  echo "UPDATE refresh_tokens SET revoked_at = now()
  WHERE token_hash = sha256(convert_to('$1' || :n || ':' || :k, 'UTF8')) AND revoked_at IS NULL AND expires_at > now();
INSERT INTO refresh_tokens (id, token_hash, session_id, issued_at, expires_at)
  VALUES (gen_random_uuid(), sha256(convert_to('$1' || :n || ':' || :c, 'UTF8')), md5('s' || :n)::uuid, now(), now() + interval '30 days');"
  echo "$audit3"
  echo 'COMMIT;'
  echo '\set k :k + 1'
}
retired_sql="revoked_at IS NOT NULL AND rotated_at IS NULL"
for step in rotation3 contract; do
  before=$(psql_ -At -d "$PG_BASE/$db" -c "SELECT count(*) FROM refresh_tokens WHERE $retired_sql")
  case $step in
    rotation3) rotation_with a >"$script" ;;
    contract) rotation_with b slide >"$script" ;;
  esac
  result=$(pgbench_ -D k=0 -f "$script" "$db")
  check_chain "$result" "$retired_sql" "$before"
  echo "${step}_tps $(echo "$result" | tps)"
done

sdb=sesame_pgbench_select
psql_ -d "$PG_BASE/postgres" -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $sdb WITH (FORCE)" -c "CREATE DATABASE $sdb" >/dev/null
pgbench -h 127.0.0.1 -p "$port" -U postgres -i -q -s 10 "$sdb" >/dev/null 2>&1
select=$(pgbench_ -S "$sdb")
echo "select_tps $(echo "$select" | tps)"
