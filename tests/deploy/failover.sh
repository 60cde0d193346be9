# shellcheck shell=bash
# The `failover` check of tests/deploy/run.sh (sourced by it; uses its helpers):
# a primary and a synchronous streaming standby on loopback, sesame on both through a
# multi-host DATABASE_URL, sign-in and refresh traffic, the primary killed (SIGKILL of
# the postmaster and every backend), the standby promoted. Then: every answer was 200
# or 503 database_unavailable; every 200 (logins and refreshes) is on the new primary,
# with its audit rows, and each session's last refresh token is the current one; the
# same sesame process serves again within seconds. Prints the recovery time.
#
# The clusters run PG_BIN's PostgreSQL (default: the newest /usr/lib/postgresql/*/bin);
# as root, as the `postgres` user, like scripts/pg.sh. They live in a folder of their
# own under the temp dir, removed at the end, also on failure.

FO_ROOT=   # the clusters' folder, once made
FO_RUN=()  # the command prefix that runs PostgreSQL's programs (runuser as root)
FO_PG_BIN=

# Called by run.sh's cleanup: stops the clusters (immediately) and removes them.
failover_cleanup() {
  local c
  [ -n "$FO_ROOT" ] || return 0
  for c in primary standby; do
    [ -f "$FO_ROOT/$c/postmaster.pid" ] &&
      "${FO_RUN[@]}" "$FO_PG_BIN/pg_ctl" -D "$FO_ROOT/$c" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
  done
  rm -rf "$FO_ROOT"
}

fo_find_pg_bin() {
  local d
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$d" ] && command -v pg_config >/dev/null 2>&1; then d=$(pg_config --bindir); fi
  echo "$d"
}

# fo_psql PORT DB SQL: one statement on a cluster, unaligned output.
fo_psql() {
  psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d "$2" -c "$3"
}

# fo_start NAME PORT [-c …]: starts the cluster in $FO_ROOT/NAME.
fo_start() {
  local name=$1 port=$2
  shift 2
  "${FO_RUN[@]}" "$FO_PG_BIN/pg_ctl" -D "$FO_ROOT/$name" -l "$FO_ROOT/$name.log" -w -t 60 \
    -o "-p $port -k $FO_ROOT -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100 $*" start >/dev/null ||
    fail "the $name cluster did not start: $(tail -n 5 "$FO_ROOT/$name.log")"
}

# fo_client N BASE MAILFILE LOG: until $FO_STOP exists, signs in (a new address every 8th
# turn, or when it has no session) and refreshes, one request at a time, logging a line per
# request: start_ms end_ms op status code request_id [refresh_token session_id access_token].
# After a 503 it retries the refresh with the same token (a rotation may have committed
# without its answer: within REFRESH_REUSE_INTERVAL that replay gets the same child).
fo_client() {
  local n=$1 base=$2 mail=$3 log=$4 i=0 rid email code st c t0 t1 body rt="" at="" sid="" op
  local out=$FO_DIR/client-$n.body
  fo_call() { # URL JSON RID: sets st, c, body; logs the line
    t0=$(date +%s%3N)
    st=$(curl -sS -o "$out" -w '%{http_code}' --max-time 20 -X POST -H 'content-type: application/json' \
      -H "X-Request-Id: $3" --data-binary "$2" "$1" 2>/dev/null) || st=000
    t1=$(date +%s%3N)
    body=$(cat "$out" 2>/dev/null || true)
    c=$(jq -r '.code // "-"' <<<"$body" 2>/dev/null || echo -)
  }
  while [ ! -e "$FO_STOP" ]; do
    i=$((i + 1))
    rid=fo-$n-$i
    if [ -z "$rt" ] || ((i % 8 == 0)); then
      email=fo-$n-$i@example.com
      fo_call "$base/auth/send-code" "{\"email\":\"$email\"}" "$rid-send"
      echo "$t0 $t1 send $st $c $rid-send" >>"$log"
      [ "$st" = 200 ] || continue
      code=$(code_from "$mail" "$email") || { echo "$t1 $t1 nocode 000 - $rid-send" >>"$log"; continue; }
      fo_call "$base/auth/verify-code" "{\"email\":\"$email\",\"code\":\"$code\"}" "$rid-login"
      op=login
      rid=$rid-login
    else
      fo_call "$base/auth/refresh" "{\"refreshToken\":\"$rt\"}" "$rid-refresh"
      op=refresh
      rid=$rid-refresh
    fi
    if [ "$st" = 200 ]; then
      rt=$(jq -r .refreshToken <<<"$body")
      at=$(jq -r .token <<<"$body")
      sid=$(jwt_claims "$at" | jq -r .sid)
      echo "$t0 $t1 $op $st $c $rid $rt $sid $at" >>"$log"
    else
      echo "$t0 $t1 $op $st $c $rid" >>"$log"
    fi
  done
}

# The claims of a JWT, as JSON.
jwt_claims() {
  local p=${1#*.}
  p=${p%%.*}
  p=$(tr '_-' '/+' <<<"$p")
  while ((${#p} % 4)); do p+='='; done
  base64 -d <<<"$p"
}

check_failover() {
  CHECK=failover
  local d=$T/failover p1 p2 port url pid i n port_b url_b pid_b db=sesame_failover clients=4 t_kill t_promote first last
  local pm kids state s503 bad recovered promoted_ms lines sql_rows missing
  FO_DIR=$d
  FO_STOP=$d/stop
  mkdir -p "$d"
  FO_PG_BIN=$(fo_find_pg_bin)
  for i in initdb pg_ctl pg_basebackup postgres; do
    [ -x "$FO_PG_BIN/$i" ] || fail "no $i in '$FO_PG_BIN' (install PostgreSQL's server package, or set PG_BIN)"
  done
  FO_ROOT=$(mktemp -d "${TMPDIR:-/tmp}/sesame-failover.XXXXXX")
  if [ "$(id -u)" -eq 0 ]; then
    id -u postgres >/dev/null 2>&1 || fail "as root, the clusters need an unprivileged 'postgres' user"
    FO_RUN=(runuser -u postgres --)
    chown postgres "$FO_ROOT"
  fi
  chmod 700 "$FO_ROOT"
  free_port p1
  free_port p2

  # The primary: commits wait until the standby has flushed them (synchronous_commit=on, the
  # default, with the standby named in synchronous_standby_names).
  "${FO_RUN[@]}" "$FO_PG_BIN/initdb" -D "$FO_ROOT/primary" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
    --no-sync >"$d/initdb.log" 2>&1 || fail "initdb: $(tail -n 5 "$d/initdb.log")"
  fo_start primary "$p1" -c synchronous_standby_names=standby1
  "${FO_RUN[@]}" "$FO_PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$p1" -U postgres -D "$FO_ROOT/standby" -R -X stream \
    --checkpoint=fast >"$d/basebackup.log" 2>&1 || fail "pg_basebackup: $(tail -n 5 "$d/basebackup.log")"
  # cluster_name is the standby's application_name towards the primary.
  fo_start standby "$p2" -c cluster_name=standby1
  for i in $(seq 100); do
    state=$(fo_psql "$p1" postgres "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'" 2>/dev/null || true)
    [ "$state" = sync ] && break
    sleep 0.1
  done
  [ "$state" = sync ] || fail "the standby is not a synchronous standby after 10 s (sync_state '$state')"
  [ "$(fo_psql "$p2" postgres "SELECT pg_is_in_recovery()")" = t ] || fail "the standby is not in recovery"
  fo_psql "$p1" postgres "CREATE DATABASE $db" >/dev/null

  # Two instances of sesame: A lists the primary first, B the standby first (B must skip it:
  # a write on a standby would fail). A long reuse interval, so that a client's retry of a
  # refresh whose answer was lost in the switch still converges.
  free_port port
  free_port port_b
  url=http://127.0.0.1:$port
  url_b=http://127.0.0.1:$port_b
  start_sesame failover "$port" "$db" DATABASE_URL="postgres://postgres@127.0.0.1:$p1,127.0.0.1:$p2/$db" \
    JWT_SECRET="$SECRET_MAIN" REFRESH_REUSE_INTERVAL=60s
  pid=$LAST_PID
  start_sesame failover_b "$port_b" "$db" DATABASE_URL="postgres://postgres@127.0.0.1:$p2,127.0.0.1:$p1/$db" \
    JWT_SECRET="$SECRET_MAIN" REFRESH_REUSE_INTERVAL=60s
  pid_b=$LAST_PID
  local cpids=()
  for i in $(seq "$clients"); do
    if ((i % 2)); then
      fo_client "$i" "$url" "$T/failover.out" "$d/client-$i.log" &
    else
      fo_client "$i" "$url_b" "$T/failover_b.out" "$d/client-$i.log" &
    fi
    cpids+=("$!")
    track "$!"
  done
  sleep 3

  # Kill the primary as a crash would: the postmaster and every backend at once.
  pm=$(head -n 1 "$FO_ROOT/primary/postmaster.pid")
  kids=$(ps -o pid= --ppid "$pm" | tr -d ' ' | tr '\n' ' ')
  t_kill=$(date +%s%3N)
  # shellcheck disable=SC2086
  kill -KILL "$pm" $kids
  # Its pid file now names a dead process (a pid that may be reused): cleanup must not signal it.
  rm -f "$FO_ROOT/primary/postmaster.pid"
  # A failure detector (Patroni's TTL) would take its time here; then promote.
  sleep 1
  t_promote=$(date +%s%3N)
  "${FO_RUN[@]}" "$FO_PG_BIN/pg_ctl" -D "$FO_ROOT/standby" -w -t 30 promote >/dev/null || fail "pg_ctl promote failed"
  promoted_ms=$(($(date +%s%3N) - t_promote))
  [ "$(fo_psql "$p2" postgres "SELECT pg_is_in_recovery()")" = f ] || fail "the standby is still in recovery after promote"
  # Until traffic is back (a 200 to a request sent after the promotion), at most 20 s.
  recovered=
  for i in $(seq 200); do
    recovered=$(cat "$d"/client-*.log | awk -v t="$t_promote" '$1 >= t && $4 == 200 { print $2 }' | sort -n | head -n 1)
    [ -n "$recovered" ] && break
    sleep 0.1
  done
  [ -n "$recovered" ] || fail "no 200 within 20 s of the promotion: $(tail -n 3 "$T/failover.err")"
  sleep 3
  touch "$FO_STOP"
  for i in "${cpids[@]}"; do
    wait "$i" || true
    untrack "$i"
  done
  kill -0 "$pid" 2>/dev/null || fail "sesame A exited during the failover: $(tail -n 3 "$T/failover.err")"
  kill -0 "$pid_b" 2>/dev/null || fail "sesame B exited during the failover: $(tail -n 3 "$T/failover_b.err")"
  cat "$d"/client-*.log | sort -n >"$d/all.log"
  lines=$(wc -l <"$d/all.log")

  # Every answer: 200, or 503 database_unavailable. Nothing else, and no 500.
  bad=$(awk '!($4 == 200 || ($4 == 503 && $5 == "database_unavailable"))' "$d/all.log" | head -n 3)
  [ -z "$bad" ] || fail "answers other than 200 and 503 database_unavailable: $bad"
  s503=$(awk '$4 == 503' "$d/all.log" | wc -l)
  first=$(awk -v t="$t_kill" '$2 < t' "$d/all.log" | wc -l)
  ((first >= 2 * clients)) || fail "only $first answers before the kill"
  [ -z "$(awk -v t="$t_kill" '$2 < t && $4 != 200' "$d/all.log")" ] || fail "a request failed before the kill"
  ((s503 > 0)) || fail "no 503 during the switch: the traffic did not cross it"
  # Once traffic is back, it stays back: every request sent after the first recovered 200 is answered 200.
  bad=$(awk -v t="$recovered" '$1 > t && $4 != 200' "$d/all.log" | head -n 3)
  [ -z "$bad" ] || fail "a request sent after the recovery failed: $bad"
  last=$(awk -v t="$recovered" '$1 > t && $4 == 200' "$d/all.log" | wc -l)
  ((last >= clients)) || fail "only $last answers after the recovery"

  # On the new primary: every 200 login and refresh has its audit row (same request id), every
  # login its session, every refresh its token.
  sql_rows=$(awk '$4 == 200 && ($3 == "login" || $3 == "refresh") {
      ev = ($3 == "login") ? "auth.login" : "token.refresh"
      printf "%s(%s,%s,%s,%s)", sep, "\x27" $6 "\x27", "\x27" ev "\x27", "\x27" $7 "\x27", "\x27" $8 "\x27"; sep = ","
    }' "$d/all.log")
  n=$(awk '$4 == 200 && ($3 == "login" || $3 == "refresh")' "$d/all.log" | wc -l)
  missing=$(fo_psql "$p2" "$db" "SELECT string_agg(e.rid || ' ' || e.event, ', ') FROM (VALUES $sql_rows) AS e(rid, event, token, sid)
    WHERE NOT EXISTS (SELECT 1 FROM audit_events a WHERE a.request_id = e.rid AND a.event = e.event)
       OR NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = e.sid::uuid)
       OR NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.token_hash = sha256(convert_to(e.token, 'UTF8')))")
  [ -z "$missing" ] || fail "answered 200 but missing on the new primary (audit row, session or token): $missing"
  # Each session's last refresh token is its current one: it refreshes, and that access token works.
  awk '$4 == 200 && ($3 == "login" || $3 == "refresh") { last[$8] = $7 } END { for (s in last) print s, last[s] }' \
    "$d/all.log" >"$d/sessions.txt"
  while read -r _ tok; do
    refresh "$url" "$tok"
    expect_status 200 "the last refresh token of a session, on the new primary"
    me "$url" "$TOKEN"
    expect_status 200 "/auth/me after that refresh"
  done <"$d/sessions.txt"
  req GET "$url/health"
  expect_status 200 "/health of A after the failover"
  req GET "$url_b/health"
  expect_status 200 "/health of B after the failover"
  stop "$pid_b" failover_b
  stop "$pid" failover
  ok "$lines requests by $clients clients on 2 instances (one listing the standby first), $n logins/refreshes answered 200 (those before the kill and after): all on the new primary with their audit rows, each of $(wc -l <"$d/sessions.txt") sessions' last refresh token current; $s503 answers 503 database_unavailable, no other error; promote took $promoted_ms ms; first 200 $((recovered - t_kill)) ms after the kill ($((recovered - t_promote)) ms after the promotion began), same sesame processes"
  failover_cleanup
  FO_ROOT=
}
