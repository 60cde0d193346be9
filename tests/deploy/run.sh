#!/usr/bin/env bash
# Checks every claim of docs/DEPLOYMENT.md that can be checked on one machine, against
# the files in deploy/ and a real sesame on a real PostgreSQL:
#
#   systemd unit        systemd-analyze verify + security (offline) of deploy/sesame.service
#   production env      deploy/sesame.env.example is refused as shipped, serves once filled in
#   sigterm             SIGTERM: in-flight request finishes, new connections refused, exit 0 in time
#   systemd hardening   the syscalls, socket families, memory mappings and file writes of a traced
#                       production run fit the unit's SystemCallFilter, RestrictAddressFamilies, ...
#   nginx               nginx -t and a real nginx (deploy/nginx.conf) in front of sesame
#   caddy               the same with deploy/Caddyfile
#   several instances   two instances on one database share codes, limits, sessions; a third with
#                       another JWT_SECRET refuses their tokens
#   key rotation        sesame keys generate, JWT_PRIVATE_KEY_FILE, JWT_PREVIOUS_PUBLIC_KEY_FILES
#   jwt secret rotation what changing JWT_SECRET (and OTP_SECRET) does to tokens and codes
#   backup              pg_dump/pg_restore keeps sessions; AUDIT_RETENTION cleanup
#   pgbouncer           two instances, the whole flow and `sesame cleanup` through PgBouncer
#                       (session pooling)
#   pgbouncer_transaction
#                       the same through PgBouncer in transaction pooling with
#                       DATABASE_STATEMENT_CACHE=0, 2 server connections under 16 clients, plus a
#                       refresh chain across the instances and a concurrent burst
#   logrotate           logrotate -d of deploy/logrotate.conf, then real rotations under traffic
#   failover            a primary and a synchronous standby; sesame with a multi-host DATABASE_URL
#                       under sign-in and refresh traffic; the primary killed, the standby promoted:
#                       nothing answered 200 is lost, 503 in between, traffic back within seconds
#                       (tests/deploy/failover.sh)
#
# Usage: tests/deploy/run.sh [CHECK...]   (from any directory; as root it installs missing Debian
# packages). CHECKs are function suffixes (systemd_unit production nginx caddy instances keys
# secret_rotation backup pgbouncer pgbouncer_transaction logrotate failover; production needs systemd_unit before it);
# none means all, in that order.
# Environment: SESAME_BIN (default <repo>/target/debug/sesame), PG_BASE (postgres://user@host:port,
# no database; default: scripts/pg.sh start), KEEP_TMP=1 keeps the temp folder for inspection.
# Prints one line per check and exits non-zero at the first failure.

# `A && B || fail ...` is meant throughout: fail unless both hold.
# shellcheck disable=SC2015
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)
deploy=$repo/deploy
SESAME_BIN=${SESAME_BIN:-$repo/target/debug/sesame}

CHECK=setup
fail() {
  echo "$CHECK: FAILED: $*" >&2
  exit 1
}
ok() { echo "$CHECK: ok${1:+ ($1)}"; }

[ -x "$SESAME_BIN" ] || fail "no sesame binary at $SESAME_BIN (build it, or set SESAME_BIN)"
SESAME_BIN=$(readlink -f "$SESAME_BIN")

T=$(mktemp -d "${TMPDIR:-/tmp}/sesame-deploy.XXXXXX")
PIDS=() # processes this script started and has not stopped yet
DBS=()  # databases this script created
ROLES=() # PostgreSQL roles this script created

cleanup() {
  local rc=$? pid i
  trap - EXIT INT TERM
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[i]}" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  for db in "${DBS[@]}"; do
    psql -X -q -d "$PG_BASE/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  for db in "${ROLES[@]}"; do
    psql -X -q -d "$PG_BASE/postgres" -c "DROP ROLE IF EXISTS $db" >/dev/null 2>&1 || true
  done
  failover_cleanup
  if [ -n "${KEEP_TMP:-}" ]; then echo "temp folder kept: $T" >&2; else rm -rf "$T"; fi
  exit "$rc"
}
# shellcheck source=tests/deploy/failover.sh
. "$here/failover.sh"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A refresh token of the documented shape (43 base64url characters) that sesame never issued:
# logging it out answers 200.
UNKNOWN_TOKEN=$(printf 'N%.0s' $(seq 43))

track() { PIDS+=("$1"); }
untrack() {
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# --- Packages -----------------------------------------------------------------------
declare -A pkg_of=(
  [nginx]=nginx [caddy]=caddy [logrotate]=logrotate [strace]=strace [openssl]=openssl [curl]=curl [jq]=jq
  [psql]=postgresql-client [pg_dump]=postgresql-client [pg_restore]=postgresql-client
  [systemd-analyze]=systemd [python3]=python3 [gzip]=gzip [pgbouncer]=pgbouncer
)
missing=()
for c in "${!pkg_of[@]}"; do
  command -v "$c" >/dev/null 2>&1 || missing+=("${pkg_of[$c]}")
done
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sed '/^$/d' | sort -u)
# Every check runs: a tool that cannot be installed fails the suite, it does not skip a check.
if ((${#missing[@]})); then
  [ "$(id -u)" -eq 0 ] || fail "missing Debian packages: ${missing[*]} (run as root to install them)"
  echo "installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq >"$T/apt.log" 2>&1 || fail "apt-get update failed: $(tail -n 5 "$T/apt.log")"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >>"$T/apt.log" 2>&1 || fail "apt-get install ${missing[*]} failed: $(tail -n 5 "$T/apt.log")"
  for c in "${!pkg_of[@]}"; do
    command -v "$c" >/dev/null 2>&1 || fail "$c is still missing after installing ${pkg_of[$c]}"
  done
fi
started=$SECONDS

# --- PostgreSQL ---------------------------------------------------------------------
if [ -z "${PG_BASE:-}" ]; then
  PG_BASE=$("$repo/scripts/pg.sh" start) || fail "scripts/pg.sh start failed"
fi
PG_BASE=${PG_BASE%/}
sql() {
  local db=$1
  shift
  psql -X -q -At -v ON_ERROR_STOP=1 -d "$PG_BASE/$db" -c "$*"
}
fresh_db() {
  psql -X -q -v ON_ERROR_STOP=1 -d "$PG_BASE/postgres" -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null ||
    fail "cannot create database $1 at $PG_BASE"
  DBS+=("$1")
}

# --- Helpers ------------------------------------------------------------------------
USED_PORTS=" "
# Below the kernel's ephemeral range, so an outgoing connection (sesame connects to PostgreSQL
# before it binds) cannot take the port between our choice and the bind.
read -r EPHEMERAL_LOW _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || EPHEMERAL_LOW=32768
((EPHEMERAL_LOW > 12000)) || fail "ephemeral port range starts at $EPHEMERAL_LOW: no room for test ports"
# free_port VAR: a port nothing listens on yet, not handed out before in this run.
free_port() {
  local p
  while :; do
    p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
    case $USED_PORTS in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      USED_PORTS+="$p "
      printf -v "$1" '%s' "$p"
      return
    fi
  done
}

mkdir -p "$T/run" # sesame's working directory: no .env there
# launch_sesame NAME PORT DB [VAR=VALUE...]: start `sesame serve` in a clean environment
# (later VAR=VALUE win) with the unit's UMask=0027; stdout (console email) in $T/NAME.out,
# logs in $T/NAME.err.
launch_sesame() {
  local name=$1 port=$2 db=$3
  shift 3
  (cd "$T/run" && umask 0027 && exec env -i PATH="$PATH" HOME="$T/run" \
    DATABASE_URL="$PG_BASE/$db" PORT="$port" ADMIN_PORT=0 RATE_LIMIT_ENABLED=false METRICS_FORMAT=none \
    LOG_FORMAT=json TRUST_PROXY_HEADERS=true "$@" "$SESAME_BIN" serve) >"$T/$name.out" 2>"$T/$name.err" &
  LAST_PID=$!
  track "$LAST_PID"
}
# wait_healthy NAME URL PID: until GET URL/health is 200 (15 s at most).
wait_healthy() {
  local i
  for i in $(seq 150); do
    curl -fsS -o /dev/null --max-time 2 -k "$2/health" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || fail "$1 exited at start: $(tail -n 5 "$T/$1.err" 2>/dev/null)"
    sleep 0.1
  done
  fail "$1 not healthy after 15 s: $(tail -n 5 "$T/$1.err" 2>/dev/null)"
}
# start_sesame NAME PORT DB [VAR=VALUE...]: launch and wait until healthy; pid in LAST_PID.
start_sesame() {
  launch_sesame "$@"
  wait_healthy "$1" "http://127.0.0.1:$2" "$LAST_PID"
}
# stop PID [NAME]: SIGTERM, wait; fails unless it exits 0.
stop() {
  local rc=0
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" || rc=$?
  untrack "$1"
  [ "$rc" -eq 0 ] || fail "${2:-process $1} exited $rc after SIGTERM${2:+: $(tail -n 3 "$T/$2.err" 2>/dev/null)}"
}

# end PID: SIGTERM a helper process (SMTP sink, nginx, Caddy) and reap it, whatever its status.
end() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  untrack "$1"
}

# req METHOD URL [curl args]: sets STATUS and BODY; response headers in $T/hdrs.
req() {
  local m=$1 u=$2
  shift 2
  STATUS=$(curl -sS -k -X "$m" -o "$T/body" -D "$T/hdrs" -w '%{http_code}' --max-time 20 "$@" "$u") ||
    fail "curl $m $u: no answer"
  BODY=$(cat "$T/body")
}
post_json() {
  local u=$1 body=$2
  shift 2
  req POST "$u" -H 'content-type: application/json' --data-binary "$body" "$@"
}
header() { awk -v h="$1" -F': ' 'tolower($1) == tolower(h) { sub(/\r$/, "", $2); print $2; exit }' "$T/hdrs"; }
expect_status() {
  [ "$STATUS" = "$1" ] || fail "$2: expected HTTP $1, got $STATUS: $(head -c 300 <<<"$BODY")"
}
expect_code() {
  local c
  c=$(jq -r '.code // empty' <<<"$BODY" 2>/dev/null || true)
  [ "$STATUS" = "$1" ] && [ "$c" = "$2" ] || fail "$3: expected HTTP $1 $2, got $STATUS: $(head -c 300 <<<"$BODY")"
}

# code_from FILE EMAIL: the last sign-in code mailed to EMAIL (console output or SMTP sink file).
code_from() {
  local code i
  for i in $(seq 50); do
    code=$(awk -v to="To: $2" '$0 == to { f = 1; next } f && /^Subject: .*Your sign-in code: / { c = $NF; f = 0 } END { print c }' "$1" 2>/dev/null || true)
    [ -n "$code" ] && { echo "$code"; return 0; }
    sleep 0.1
  done
  return 1
}
# login BASE_URL MAILFILE EMAIL: sign in with a code; sets TOKEN and REFRESH.
login() {
  local code
  post_json "$1/auth/send-code" "{\"email\":\"$3\"}"
  expect_status 200 "send-code $3"
  code=$(code_from "$2" "$3") || fail "no code mailed to $3 (in $2)"
  post_json "$1/auth/verify-code" "{\"email\":\"$3\",\"code\":\"$code\"}"
  expect_status 200 "verify-code $3"
  TOKEN=$(jq -r .token <<<"$BODY")
  REFRESH=$(jq -r .refreshToken <<<"$BODY")
}
# refresh BASE_URL TOKEN: sets STATUS; on 200 sets TOKEN and REFRESH.
refresh() {
  post_json "$1/auth/refresh" "{\"refreshToken\":\"$2\"}"
  if [ "$STATUS" = 200 ]; then
    TOKEN=$(jq -r .token <<<"$BODY")
    REFRESH=$(jq -r .refreshToken <<<"$BODY")
  fi
}
me() { req GET "$1/auth/me" -H "authorization: Bearer $2"; }
jwt_header() {
  local h=${1%%.*}
  h=$(tr '_-' '/+' <<<"$h")
  while ((${#h} % 4)); do h+='='; done
  base64 -d <<<"$h"
}
jwks_kids() { curl -fsS "$1/.well-known/jwks.json" | jq -r '[.keys[].kid] | sort | join(",")'; }
random_secret() { openssl rand -base64 48 | tr -d '\n'; }

# --- The main instance (development mode, a fixed JWT_SECRET), behind the proxies ----
fresh_db sesame_deploy
SECRET_MAIN=$(random_secret)
free_port MAIN_PORT
free_port MAIN_ADMIN_PORT
MAIN_ADMIN_TOKEN=$(openssl rand -hex 32)
MAIN=http://127.0.0.1:$MAIN_PORT
MAIN_ADMIN=http://127.0.0.1:$MAIN_ADMIN_PORT
start_sesame main "$MAIN_PORT" sesame_deploy JWT_SECRET="$SECRET_MAIN" ADMIN_PORT="$MAIN_ADMIN_PORT" \
  ADMIN_TOKEN="$MAIN_ADMIN_TOKEN"
MAIN_PID=$LAST_PID

# =====================================================================================
check_systemd_unit() {
  CHECK="systemd unit"
  local unit=$deploy/sesame.service d=$T/systemd out line stop sec exposure
  mkdir -p "$d"
  grep -qx 'ExecStart=/usr/local/bin/sesame serve' "$unit" || fail "ExecStart is not '/usr/local/bin/sesame serve'"
  for line in User=sesame Group=sesame EnvironmentFile=/etc/sesame/sesame.env Restart=on-failure \
    NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes ReadWritePaths=/var/log/sesame; do
    grep -qx "$line" "$unit" || fail "no '$line' line"
  done
  stop=$(sed -n 's/^TimeoutStopSec=\([0-9][0-9]*\)s\{0,1\}$/\1/p' "$unit")
  [ -n "$stop" ] && [ "$stop" -gt 10 ] && [ "$stop" -le 30 ] ||
    fail "TimeoutStopSec must be a little over sesame's 10 s grace period (got '$stop')"
  STOP_TIMEOUT=$stop
  # systemd-analyze verify needs ExecStart to exist: a copy of the unit pointing at the binary.
  cp "$SESAME_BIN" "$d/sesame"
  sed "s#^ExecStart=/usr/local/bin/sesame #ExecStart=$d/sesame #" "$unit" >"$d/sesame.service"
  grep -q "^ExecStart=$d/sesame serve$" "$d/sesame.service" || fail "could not rewrite ExecStart"
  out=$(systemd-analyze verify "$d/sesame.service" 2>&1) || fail "systemd-analyze verify: $out"
  [ -z "$out" ] || fail "systemd-analyze verify warns: $out"
  sec=$(systemd-analyze security --offline=true --threshold=20 "$d/sesame.service" 2>&1) ||
    fail "systemd-analyze security: exposure above 2.0: $(tail -n 1 <<<"$sec")"
  exposure=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$sec")
  rm -f "$d/sesame"
  ok "systemd-analyze verify: no warning; security --offline: exposure $exposure"
}

# The unit's SystemCallFilter as a list of allowed names.
expand_syscalls() {
  local s
  systemd-analyze syscall-filter "$1" | tail -n +2 | grep -v '^ *#' | awk 'NF { print $1 }' |
    while read -r s; do
      case $s in @*) expand_syscalls "$s" ;; *) echo "$s" ;; esac
    done
}

check_production() {
  CHECK="production env"
  local d=$T/prod vars=() line rc sink_port port spid child t0 t1 elapsed slow_pid nlines
  mkdir -p "$d/log"
  # Read the file as systemd's EnvironmentFile= does: KEY=VALUE lines, # comments.
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in '' | '#'*) continue ;; esac
    [[ $line =~ ^[A-Z_][A-Z0-9_]*= ]] || fail "deploy/sesame.env.example: not KEY=VALUE: $line"
    vars+=("$line")
  done <"$deploy/sesame.env.example"
  rc=0
  (cd "$T/run" && exec timeout 20 env -i PATH="$PATH" HOME="$T/run" "${vars[@]}" "$SESAME_BIN" serve) \
    >"$T/prod0.out" 2>"$T/prod0.err" || rc=$?
  [ "$rc" -eq 1 ] && grep -q 'JWT_SECRET' "$T/prod0.err" ||
    fail "as shipped (empty JWT_SECRET) it should be refused with exit 1, got $rc: $(head -c 300 "$T/prod0.err")"

  free_port sink_port
  python3 "$here/smtp_sink.py" "$sink_port" "$d/mail.txt" >"$T/smtp.log" 2>&1 &
  SINK_PID=$!
  track "$SINK_PID"
  for line in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$sink_port") 2>/dev/null && break
    kill -0 "$SINK_PID" 2>/dev/null || fail "the SMTP sink exited: $(cat "$T/smtp.log")"
    sleep 0.1
  done
  "$SESAME_BIN" keys generate --out "$d/keys" >/dev/null || fail "sesame keys generate failed"
  free_port port
  free_port admin_port
  local url=http://127.0.0.1:$port admin_url=http://127.0.0.1:$admin_port db_url=$PG_BASE/sesame_deploy
  # Host names, not addresses, so the traced run resolves names as production does.
  db_url=${db_url/@127.0.0.1:/@localhost:}
  (cd "$T/run" && umask 0027 && exec env -i PATH="$PATH" HOME="$T/run" "${vars[@]}" \
    JWT_SECRET="$(random_secret)" DATABASE_URL="$db_url" PORT="$port" ADMIN_PORT="$admin_port" \
    SMTP_URL="smtp://localhost:$sink_port" METRICS_FILE_PATH="$d/log/metrics.jsonl" \
    JWT_PRIVATE_KEY_FILE="$d/keys/jwt-ed25519.pem" \
    strace -f -qq -o "$d/strace.txt" "$SESAME_BIN" serve) >"$T/prod.out" 2>"$T/prod.err" &
  spid=$!
  track "$spid"
  wait_healthy prod "$url" "$spid"
  child=$(ps -o pid= --ppid "$spid" | tr -d ' ' | head -n 1)
  [ -n "$child" ] || fail "cannot find sesame under strace"
  track "$child" # so that a failure stops sesame itself: strace would only detach
  login "$url" "$d/mail.txt" prod@example.com
  me "$url" "$TOKEN"
  expect_status 200 "/auth/me"
  refresh "$url" "$REFRESH"
  expect_status 200 "refresh"
  req GET "$admin_url/metrics"
  expect_status 200 "/metrics on the admin listener"
  req GET "$url/metrics"
  expect_code 404 not_found "/metrics on the public port"
  # ADMIN_TOKEN is empty in the template: the admin API is off, metrics and health are not.
  req GET "$admin_url/admin/users"
  expect_code 401 admin_token_required "/admin/users without ADMIN_TOKEN"
  # The admin listener is on loopback only: not reachable on this host's other addresses,
  # where the public comes in.
  local public_ip
  public_ip=$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+\.' | grep -v '^127\.' | head -n 1 || true)
  [ -n "$public_ip" ] || fail "no non-loopback IPv4 address to check the admin port against"
  if curl -s -o /dev/null --max-time 3 "http://$public_ip:$admin_port/metrics"; then
    fail "the admin listener answers on $public_ip:$admin_port"
  fi
  [ "$(jwks_kids "$url")" = "$(jwt_header "$TOKEN" | jq -r .kid)" ] || fail "JWKS does not list the signing key"
  post_json "$url/auth/send-code" '{"email":"not an address"}'
  expect_code 400 invalid_email "invalid address"
  for line in $(seq 50); do
    nlines=$(wc -l <"$d/log/metrics.jsonl" 2>/dev/null || echo 0)
    [ "$nlines" -ge 5 ] && break
    sleep 0.1
  done
  [ "$nlines" -ge 5 ] || fail "the JSON Lines file $d/log/metrics.jsonl got $nlines lines"
  ok "refused as shipped (empty JWT_SECRET); with it filled in (and an Ed25519 key): login over SMTP, refresh, JWKS, JSON Lines file; /metrics on the admin listener only, which the host's public address does not reach"

  CHECK=sigterm
  # A request whose body takes 2 s is in flight when SIGTERM arrives (a logout of an
  # unknown token of the documented shape, 43 base64url characters: 200).
  { printf '{"refreshToken":'; sleep 2; printf '"%s"}' "$UNKNOWN_TOKEN"; } |
    curl -sS -o "$T/slow.body" -w '%{http_code}' --max-time 20 -X POST -T - \
      -H 'content-type: application/json' "$url/auth/logout" >"$T/slow.status" 2>"$T/slow.err" &
  slow_pid=$!
  sleep 0.5
  t0=$(date +%s%N)
  kill -TERM "$child"
  sleep 0.2
  # Refused, not merely slow: curl's exit 7 is "failed to connect" (a timeout would be 28).
  rc=0
  curl -sS -o /dev/null --max-time 2 "$url/health" 2>"$T/refused.err" || rc=$?
  [ "$rc" -eq 7 ] || fail "a new connection after SIGTERM: expected it refused (curl exit 7), got curl exit $rc: $(cat "$T/refused.err")"
  rc=0
  wait "$spid" || rc=$?
  untrack "$spid"
  untrack "$child"
  t1=$(date +%s%N)
  wait "$slow_pid" || true
  elapsed=$(((t1 - t0) / 1000000))
  [ "$rc" -eq 0 ] || fail "exit status $rc after SIGTERM: $(tail -n 3 "$T/prod.err")"
  [ "$(cat "$T/slow.status")" = 200 ] || fail "the in-flight request got '$(cat "$T/slow.status")' $(cat "$T/slow.err")"
  ((elapsed < STOP_TIMEOUT * 1000)) || fail "took ${elapsed} ms, over TimeoutStopSec=${STOP_TIMEOUT}s"
  tail -n 1 "$T/prod.err" | grep -q '"sesame stopped"' || fail "no 'sesame stopped' log line"
  ok "in-flight request finished 200, new connections refused, exit 0 after ${elapsed} ms (TimeoutStopSec=${STOP_TIMEOUT}s)"
  end "$SINK_PID"

  CHECK="systemd hardening"
  local unit=$deploy/sesame.service tr=$d/strace.txt allow deny bad fams allowed_fams f used
  # SystemCallFilter: the union of the allow lines minus the union of the ~deny lines.
  allow=$(sed -n 's/^SystemCallFilter=\([^~].*\)$/\1/p' "$unit" | tr ' ' '\n' | sed '/^$/d' |
    while read -r f; do case $f in @*) expand_syscalls "$f" ;; *) echo "$f" ;; esac; done | sort -u)
  deny=$(sed -n 's/^SystemCallFilter=~\(.*\)$/\1/p' "$unit" | tr ' ' '\n' | sed '/^$/d' |
    while read -r f; do case $f in @*) expand_syscalls "$f" ;; *) echo "$f" ;; esac; done | sort -u)
  [ -n "$allow" ] || fail "no SystemCallFilter allow list in the unit"
  used=$(sed -nE 's/^[0-9]+ +([a-z0-9_]+)\(.*/\1/p' "$tr" | sort -u)
  [ -n "$used" ] || fail "strace recorded nothing"
  bad=$(comm -23 <(echo "$used") <(comm -23 <(echo "$allow") <(echo "$deny")) | tr '\n' ' ')
  [ -z "$bad" ] || fail "syscalls outside SystemCallFilter (the service would be killed): $bad"
  allowed_fams=$(sed -n 's/^RestrictAddressFamilies=//p' "$unit")
  fams=$(grep -oE '(socket|socketpair)\(AF_[A-Z0-9]+' "$tr" | sed 's/.*(//' | sort -u | tr '\n' ' ')
  for f in $fams; do
    [[ " $allowed_fams " == *" $f "* ]] || fail "socket family $f not in RestrictAddressFamilies=$allowed_fams"
  done
  # MemoryDenyWriteExecute: no writable+executable mapping, no mprotect to executable.
  bad=$(grep -E 'mmap\(.*PROT_WRITE\|PROT_EXEC|mmap\(.*PROT_EXEC\|PROT_WRITE|mprotect\(.*PROT_EXEC' "$tr" | head -n 3 || true)
  [ -z "$bad" ] || fail "writable+executable memory (MemoryDenyWriteExecute would refuse it): $bad"
  # ProtectSystem=strict + ReadWritePaths: files opened for writing or created only under the log folder.
  bad=$(grep -E '(openat|open|creat)\(.*(O_WRONLY|O_RDWR|O_CREAT)' "$tr" | grep -v ' = -1 ' |
    grep -vF "\"$d/log/" | head -n 3 || true)
  [ -z "$bad" ] || fail "writes outside the log folder (ProtectSystem=strict would refuse them): $bad"
  bad=$(grep -E '(mkdir|mkdirat|rename|renameat2?|unlink|unlinkat)\(' "$tr" | grep -v ' = -1 ' |
    grep -vF "\"$d/log" | head -n 3 || true)
  [ -z "$bad" ] || fail "file system changes outside the log folder: $bad"
  # PrivateDevices=yes: only the pseudo devices; ProcSubset=pid: only /proc/<pid> files.
  local paths
  paths=$(grep -E '^[0-9]+ +(open|openat|openat2|statx|newfstatat|stat|lstat|access|faccessat2?|readlink|readlinkat)\(' "$tr" |
    grep -oE '^[0-9]+ +[a-z0-9_]+\((AT_FDCWD, )?"[^"]*"' | sed -E 's/.*"(.*)"$/\1/' | sort -u)
  bad=$(grep -E '^/dev/' <<<"$paths" | grep -vE '^/dev/(null|zero|full|random|urandom|tty|pts/[0-9]+|ptmx)$' | head -n 3 || true)
  [ -z "$bad" ] || fail "opens devices PrivateDevices=yes hides: $bad"
  bad=$(grep -E '^/proc/' <<<"$paths" | grep -vE '^/proc/(self|thread-self|[0-9]+)(/|$)' | head -n 3 || true)
  [ -z "$bad" ] || fail "reads /proc files ProcSubset=pid hides: $bad"
  ok "traced production run: $(wc -w <<<"$used") syscalls, all in SystemCallFilter; sockets ${fams% }; no W+X memory; writes only to the log folder"
}

# requests_seen: the sum of sesame_http_requests_total of the main instance: every request it
# answered. A request is counted once answered, so a scrape counts in the next one.
requests_seen() {
  local m
  m=$(curl -fsS --max-time 5 "$MAIN_ADMIN/metrics") || return 1
  awk '/^sesame_http_requests_total\{/ { n += $NF } END { print n + 0 }' <<<"$m"
}

# check_proxy NAME BASE_URL: the checks shared by nginx and Caddy.
check_proxy() {
  local name=$1 base=$2 rid ip i before after
  req GET "$base/health"
  expect_status 200 "GET /health through $name"
  [ "$(jq -cS . <<<"$BODY")" = '{"database":"ok","status":"ok"}' ] || fail "/health body: $BODY"
  [ -n "$(header X-Request-Id)" ] || fail "no X-Request-Id on the response"
  PROXY_RID=$(header X-Request-Id)
  rid="deploy-$name-$RANDOM$RANDOM"
  PROXY_CLIENT_RID=$rid
  req GET "$base/health" -H "X-Request-Id: $rid"
  [ "$(header X-Request-Id)" = "$rid" ] || fail "the client's X-Request-Id was not passed through: got '$(header X-Request-Id)'"
  # A client claiming another address: sesame must record the proxy's view (127.0.0.1).
  post_json "$base/auth/logout" "{\"refreshToken\":\"$UNKNOWN_TOKEN\"}" -H 'X-Forwarded-For: 203.0.113.9' -H "X-Request-Id: $rid-xff"
  expect_status 200 "POST /auth/logout through $name"
  ip=$(sql sesame_deploy "SELECT event || ' ' || host(ip) FROM audit_events WHERE request_id = '$rid-xff'")
  [ "$ip" = "auth.logout 127.0.0.1" ] || fail "audit_events for the spoofed request: '$ip' (expected 'auth.logout 127.0.0.1')"
  # Not served on the public port: the proxy passes them to sesame, which answers 404.
  req GET "$base/metrics"
  expect_code 404 not_found "GET /metrics through $name"
  req GET "$base/admin/users" -H "Authorization: Bearer $MAIN_ADMIN_TOKEN"
  expect_code 404 not_found "GET /admin/users through $name"
  head -c 70000 /dev/zero | tr '\0' a | sed 's/^/{"refreshToken":"/; s/$/"}/' >"$T/big.json"
  # The proxy answers the 413 without contacting sesame: sesame's request counter does not move.
  # Control first: the same body sent straight to sesame is counted (sesame's own 413).
  before=$(requests_seen) || fail "GET $MAIN_ADMIN/metrics failed"
  req POST "$MAIN/auth/logout" -H 'content-type: application/json' --data-binary @"$T/big.json"
  expect_code 413 payload_too_large "control: the 70 kB body straight to sesame"
  after=$(requests_seen) || fail "GET $MAIN_ADMIN/metrics failed"
  [ $((after - before)) -eq 2 ] ||
    fail "control: sesame's counter moved by $((after - before)) for one scrape and one oversized body (expected 2)"
  before=$after
  for i in 1 2 3 4 5; do # a proxy that streams the body to sesame would race its early 413
    req POST "$base/auth/logout" -H 'content-type: application/json' -H "X-Request-Id: $rid-big-$i" \
      --data-binary @"$T/big.json"
    expect_code 413 payload_too_large "a 70 kB body through $name (try $i)"
  done
  after=$(requests_seen) || fail "GET $MAIN_ADMIN/metrics failed"
  # Exactly 1 more (the previous scrape): sesame saw none of the 5.
  [ $((after - before)) -eq 1 ] ||
    fail "sesame counted $((after - before - 1)) request(s) while $name answered 5 oversized bodies with 413"
}

# ms_since T0: milliseconds since T0 (from date +%s%N).
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

# racing_tab NAME BASE_URL [control]: a tab replays, through the proxy, the refresh token another
# tab has just rotated. Within REFRESH_REUSE_INTERVAL (the main instance keeps the default, 10 s)
# both get 200 and the same new refresh token, and the session lives on. With `control`, the
# same replay once the interval has passed is reuse: 401, and the session ends.
racing_tab() {
  local name=$1 base=$2 parent child access t0 ms ended
  login "$base" "$T/main.out" "tab-$name@example.com"
  parent=$REFRESH
  refresh "$base" "$parent"
  expect_status 200 "refresh through $name"
  t0=$(date +%s%N)
  child=$REFRESH access=$TOKEN
  refresh "$base" "$parent"
  ms=$(ms_since "$t0")
  expect_status 200 "the parent replayed ${ms} ms after its rotation, through $name"
  ((ms < 9000)) || fail "the replay came ${ms} ms after the rotation: not within the 10 s interval"
  [ "$REFRESH" = "$child" ] || fail "the replayed parent got another refresh token than the first tab's"
  [ "$TOKEN" != "$access" ] || fail "the replayed parent got the first tab's access token, not a fresh one"
  me "$base" "$TOKEN"
  expect_status 200 "GET /auth/me with the replay's access token, through $name"
  RACE_NOTE="a refresh token replayed ${ms} ms after its rotation got 200 and the same child"
  if [ "${3:-}" != control ]; then
    refresh "$base" "$child"
    expect_status 200 "the shared child after the race, through $name"
    return
  fi
  # Control: the same replay after the interval (the child still live, so only time differs).
  ms=$(ms_since "$t0")
  ((ms >= 10500)) || sleep "$(printf '%d.%03d' $(((10500 - ms) / 1000)) $(((10500 - ms) % 1000)))"
  ms=$(ms_since "$t0")
  refresh "$base" "$parent"
  expect_code 401 invalid_refresh_token "control: the parent replayed ${ms} ms after its rotation, through $name"
  refresh "$base" "$child"
  expect_code 401 invalid_refresh_token "control: the child after that replay (the session should have ended)"
  ended=$(sql sesame_deploy "SELECT string_agg(s.revoke_reason, ',') FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.email = 'tab-$name@example.com'")
  [ "$ended" = reuse_detected ] || fail "control: the session's revoke_reason is '$ended', expected reuse_detected"
  RACE_NOTE+="; ${ms} ms after, 401 and the session ended (reuse_detected)"
}

# Control for the proxy checks: sesame itself does trust the header (TRUST_PROXY_HEADERS=true).
check_direct_trusts_xff() {
  local rid=deploy-direct-$RANDOM$RANDOM ip
  post_json "$MAIN/auth/logout" "{\"refreshToken\":\"$UNKNOWN_TOKEN\"}" -H 'X-Forwarded-For: 203.0.113.9' -H "X-Request-Id: $rid"
  expect_status 200 "direct POST /auth/logout"
  ip=$(sql sesame_deploy "SELECT host(ip) FROM audit_events WHERE request_id = '$rid'")
  [ "$ip" = 203.0.113.9 ] || fail "control: sesame itself should record the first X-Forwarded-For hop, got '$ip'"
}

check_nginx() {
  CHECK=nginx
  local d=$T/nginx conf port port80 out pid i
  mkdir -p "$d/logs" "$d/tmp"
  check_direct_trusts_xff
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
    -keyout "$d/key.pem" -out "$d/cert.pem" >/dev/null 2>&1 || fail "openssl could not make a test certificate"
  free_port port
  free_port port80
  # deploy/nginx.conf with the test's ports, certificate and log folder.
  sed -e "s#server 127.0.0.1:3001;#server 127.0.0.1:$MAIN_PORT;#" \
    -e "s#^\( *\)listen 443 ssl;#\1listen 127.0.0.1:$port ssl;#" \
    -e "s#^\( *\)listen 80;#\1listen 127.0.0.1:$port80;#" \
    -e '/^ *listen \[::\]:/d' \
    -e "s#/etc/ssl/sesame/fullchain.pem#$d/cert.pem#; s#/etc/ssl/sesame/privkey.pem#$d/key.pem#" \
    -e "s#/var/log/nginx/#$d/logs/#" "$deploy/nginx.conf" >"$d/sesame.conf"
  for out in "server 127.0.0.1:$MAIN_PORT;" "listen 127.0.0.1:$port ssl;" "listen 127.0.0.1:$port80;" "$d/cert.pem" "$d/logs/sesame.access.log"; do
    grep -qF "$out" "$d/sesame.conf" || fail "could not rewrite deploy/nginx.conf for the test ($out)"
  done
  ! grep -v '^ *#' "$d/sesame.conf" | grep -qE ':3001|listen (443|80)|/etc/ssl/sesame|/var/log/nginx' || fail "deploy/nginx.conf has lines the test does not rewrite"
  {
    [ "$(id -u)" -ne 0 ] || echo "user root;"
    echo "worker_processes 1;"
    echo "pid $d/nginx.pid;"
    echo "error_log $d/logs/error.log;"
    echo "events { worker_connections 64; }"
    echo "http {"
    echo "  access_log $d/logs/access.log;"
    for i in client_body proxy fastcgi uwsgi scgi; do echo "  ${i}_temp_path $d/tmp/$i;"; done
    echo "  include $d/sesame.conf;"
    echo "}"
  } >"$d/test.conf"
  out=$(nginx -t -p "$d/" -e "$d/logs/error.log" -c "$d/test.conf" 2>&1) || fail "nginx -t: $out"
  nginx -p "$d/" -e "$d/logs/error.log" -c "$d/test.conf" -g 'daemon off;' >"$T/nginx.log" 2>&1 &
  pid=$!
  track "$pid"
  for i in $(seq 100); do
    curl -sk -o /dev/null "https://127.0.0.1:$port/health" && break
    kill -0 "$pid" 2>/dev/null || fail "nginx exited: $(cat "$T/nginx.log" "$d/logs/error.log")"
    sleep 0.1
  done
  check_proxy nginx "https://127.0.0.1:$port"
  # nginx's own request id (no client one) reached sesame and the access log.
  [[ $PROXY_RID =~ ^[0-9a-f]{32}$ ]] || fail "expected nginx's \$request_id as X-Request-Id, got '$PROXY_RID'"
  grep -q "rid=$PROXY_RID " "$d/logs/sesame.access.log" || fail "the access log lacks rid=$PROXY_RID"
  [ "$(header X-Request-Id)" != "" ] || fail "the 413 answer has no X-Request-Id"
  # nginx's own record of the oversized bodies: answered 413 with no upstream (urt=-).
  for i in 1 2 3 4 5; do
    grep -q "\" 413 [0-9]* rid=$PROXY_CLIENT_RID-big-$i rt=[0-9.]* urt=-\$" "$d/logs/sesame.access.log" ||
      fail "the access log has no 413 without upstream for rid=$PROXY_CLIENT_RID-big-$i: $(grep -F "rid=$PROXY_CLIENT_RID-big-$i " "$d/logs/sesame.access.log")"
  done
  # A magic-link token in the query string never reaches the access log.
  local link_token=DeployLogCheck0123456789abcdefghijklmnopqrs
  req GET "https://127.0.0.1:$port/auth/verify?token=$link_token"
  [ "$STATUS" = 200 ] || fail "GET /auth/verify through nginx: expected 200, got $STATUS"
  grep -q '"GET /auth/verify[ ?]' "$d/logs/sesame.access.log" || fail "the access log lacks the GET /auth/verify line"
  ! grep -q "$link_token" "$d/logs/sesame.access.log" || fail "the access log holds a magic-link token"
  req GET "http://127.0.0.1:$port80/health"
  [ "$STATUS" = 301 ] && [[ $(header Location) == https://* ]] || fail "http port: expected a 301 to https, got $STATUS"
  racing_tab nginx "https://127.0.0.1:$port" control
  end "$pid"
  ok "nginx -t passes; through a real nginx: /health, X-Request-Id (nginx's own or the client's, also in the access log), spoofed X-Forwarded-For recorded as 127.0.0.1, /metrics and /admin/ 404, 413 JSON without contacting sesame (its request counter still; urt=- in the access log), no link token in the access log, http→https; racing tab: $RACE_NOTE"
}

check_caddy() {
  CHECK=caddy
  local d=$T/caddy port pid i out
  mkdir -p "$d/home"
  free_port port
  # deploy/Caddyfile served over plain HTTP on a test port, without the admin endpoint.
  sed -e "s#^auth.example.com {#http://127.0.0.1:$port {#" \
    -e "s#reverse_proxy 127.0.0.1:3001 {#reverse_proxy 127.0.0.1:$MAIN_PORT {#" \
    -e '0,/^{$/s//{\n\tadmin off/' "$deploy/Caddyfile" >"$d/Caddyfile"
  for out in "http://127.0.0.1:$port {" "reverse_proxy 127.0.0.1:$MAIN_PORT {" "admin off"; do
    grep -qF "$out" "$d/Caddyfile" || fail "could not rewrite deploy/Caddyfile for the test ($out)"
  done
  out=$(HOME=$d/home XDG_DATA_HOME=$d/home XDG_CONFIG_HOME=$d/home caddy validate --config "$d/Caddyfile" --adapter caddyfile 2>&1) ||
    fail "caddy validate: $(tail -n 3 <<<"$out")"
  HOME=$d/home XDG_DATA_HOME=$d/home XDG_CONFIG_HOME=$d/home caddy run --config "$d/Caddyfile" --adapter caddyfile >"$T/caddy.log" 2>&1 &
  pid=$!
  track "$pid"
  for i in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/health" && break
    kill -0 "$pid" 2>/dev/null || fail "caddy exited: $(tail -n 5 "$T/caddy.log")"
    sleep 0.1
  done
  check_proxy caddy "http://127.0.0.1:$port"
  racing_tab caddy "http://127.0.0.1:$port"
  end "$pid"
  ok "caddy $(caddy version | cut -d' ' -f1) validate passes; through a real Caddy: /health, X-Request-Id, spoofed X-Forwarded-For recorded as 127.0.0.1, /metrics and /admin/ 404, 413 JSON without contacting sesame (its request counter still); racing tab: $RACE_NOTE (TLS not tested)"
}

check_instances() {
  CHECK="several instances"
  local pa pb pc a b c pid_a pid_b pid_c s1 n r1 r2 r3 role=sesame_deploy_app pw url
  # The instances connect as an ordinary role that owns the database, not as a superuser.
  fresh_db sesame_deploy_multi
  pw=$(openssl rand -hex 16)
  ROLES+=("$role")
  sql postgres "SET client_min_messages = warning; DROP ROLE IF EXISTS $role"
  sql postgres "CREATE ROLE $role LOGIN PASSWORD '$pw'"
  sql postgres "ALTER DATABASE sesame_deploy_multi OWNER TO $role"
  url=${PG_BASE#*://}
  url="postgres://$role:$pw@${url#*@}/sesame_deploy_multi"
  s1=$(random_secret)
  free_port pa
  free_port pb
  free_port pc
  a=http://127.0.0.1:$pa b=http://127.0.0.1:$pb c=http://127.0.0.1:$pc
  # Two instances start together on an empty database: migrations run once.
  launch_sesame multi_a "$pa" sesame_deploy_multi DATABASE_URL="$url" JWT_SECRET="$s1" RATE_LIMIT_ENABLED=true TRUST_PROXY_HEADERS=false
  pid_a=$LAST_PID
  launch_sesame multi_b "$pb" sesame_deploy_multi DATABASE_URL="$url" JWT_SECRET="$s1" RATE_LIMIT_ENABLED=true TRUST_PROXY_HEADERS=false
  pid_b=$LAST_PID
  wait_healthy multi_a "$a" "$pid_a"
  wait_healthy multi_b "$b" "$pid_b"
  n=$(sql sesame_deploy_multi "SELECT count(*) FROM _sqlx_migrations WHERE success")
  # (Had both applied them unserialised, one would have failed on the same CREATE TABLE and exited.)
  [ "$n" -gt 0 ] || fail "no migration recorded"
  [ "$(sql sesame_deploy_multi "SELECT tableowner FROM pg_tables WHERE tablename = 'users'")" = "$role" ] ||
    fail "the tables are not owned by $role"
  start_sesame multi_c "$pc" sesame_deploy_multi DATABASE_URL="$url" JWT_SECRET="$(random_secret)" RATE_LIMIT_ENABLED=true TRUST_PROXY_HEADERS=false
  pid_c=$LAST_PID

  # A code sent by A is verified by B.
  post_json "$a/auth/send-code" '{"email":"multi@example.com"}'
  expect_status 200 "send-code on A"
  n=$(code_from "$T/multi_a.out" multi@example.com) || fail "no code from A"
  post_json "$b/auth/verify-code" "{\"email\":\"multi@example.com\",\"code\":\"$n\"}"
  expect_status 200 "verify-code on B of A's code"
  TOKEN=$(jq -r .token <<<"$BODY")
  r1=$(jq -r .refreshToken <<<"$BODY")
  # The per-address limit counted on A holds on B.
  post_json "$b/auth/send-code" '{"email":"multi@example.com"}'
  expect_code 429 rate_limited "second send-code within a minute, on B"
  [ "$(jq -r .limit <<<"$BODY")" = send_per_address_interval ] && [ -n "$(header Retry-After)" ] ||
    fail "429 without the limit name or Retry-After: $BODY"
  me "$b" "$TOKEN"
  expect_status 200 "A's/B's access token on B"
  me "$c" "$TOKEN"
  expect_code 401 invalid_token "the token on C (another JWT_SECRET)"
  refresh "$a" "$r1"
  expect_status 200 "refresh on A"
  r2=$REFRESH
  refresh "$b" "$r2"
  expect_status 200 "refresh of A's child on B"
  r3=$REFRESH
  # A racing tab replays that token on A within the reuse interval: the child B made.
  refresh "$a" "$r2"
  expect_status 200 "the same token replayed on A within the reuse interval"
  [ "$REFRESH" = "$r3" ] || fail "the replay on A got another refresh token than B's child"
  # Replaying the first token on B is reuse: the session ends on every instance.
  refresh "$b" "$r1"
  expect_code 401 invalid_refresh_token "reuse of the first token on B"
  refresh "$a" "$r3"
  expect_code 401 invalid_refresh_token "the newest token on A after reuse on B"
  stop "$pid_c" multi_c
  stop "$pid_b" multi_b
  stop "$pid_a" multi_a
  ok "2 instances started together as a non-superuser owner role (migrations once); a code sent by one verified by the other; per-address limit, refresh chain, reuse interval (a replay on the other instance gets the same child) and reuse detection shared; an instance with another JWT_SECRET answers 401"
}

check_keys() {
  CHECK="key rotation"
  local d=$T/keys port url kid1 kid2 t1 t2 r1 pid secret=$SECRET_MAIN
  mkdir -p "$d"
  # A session that starts in the default HS256 mode (the main instance, same JWT_SECRET).
  login "$MAIN" "$T/main.out" keys@example.com
  free_port port
  url=http://127.0.0.1:$port
  "$SESAME_BIN" keys generate --out "$d/k1" >"$d/k1.txt" || fail "sesame keys generate failed"
  kid1=$(sed -n 's/^kid: //p' "$d/k1.txt")
  [ -n "$kid1" ] && [ "$(stat -c %a "$d/k1/jwt-ed25519.pem")" = 600 ] || fail "keys generate: no kid or private key not 0600"
  start_sesame keys1 "$port" sesame_deploy JWT_SECRET="$secret" JWT_PRIVATE_KEY_FILE="$d/k1/jwt-ed25519.pem"
  pid=$LAST_PID
  [ "$(jwks_kids "$url")" = "$kid1" ] || fail "JWKS should list $kid1 only"
  # Switching HS256 -> EdDSA: HS256 access tokens are refused, their refresh tokens are not.
  me "$url" "$TOKEN"
  expect_code 401 invalid_token "HS256 token after switching to EdDSA"
  refresh "$url" "$REFRESH"
  expect_status 200 "refresh of an HS256-era session after switching to EdDSA"
  t1=$TOKEN r1=$REFRESH
  [ "$(jwt_header "$t1" | jq -r '.alg + " " + .kid')" = "EdDSA $kid1" ] || fail "token header: $(jwt_header "$t1")"
  stop "$pid" keys1
  "$SESAME_BIN" keys generate --out "$d/k2" >"$d/k2.txt"
  kid2=$(sed -n 's/^kid: //p' "$d/k2.txt")
  # Step 1: publish the new public key before signing with it.
  start_sesame keys2 "$port" sesame_deploy JWT_SECRET="$secret" JWT_PRIVATE_KEY_FILE="$d/k1/jwt-ed25519.pem" \
    JWT_PREVIOUS_PUBLIC_KEY_FILES="$d/k2/jwt-ed25519.pub.pem"
  pid=$LAST_PID
  [ "$(jwks_kids "$url")" = "$(printf '%s\n' "$kid1" "$kid2" | sort | paste -sd,)" ] || fail "step 1: JWKS should list both kids"
  me "$url" "$t1"
  expect_status 200 "step 1: old token"
  stop "$pid" keys2
  # Step 2: sign with the new key; the old one stays accepted.
  start_sesame keys3 "$port" sesame_deploy JWT_SECRET="$secret" JWT_PRIVATE_KEY_FILE="$d/k2/jwt-ed25519.pem" \
    JWT_PREVIOUS_PUBLIC_KEY_FILES="$d/k1/jwt-ed25519.pub.pem"
  pid=$LAST_PID
  [ "$(jwks_kids "$url")" = "$(printf '%s\n' "$kid1" "$kid2" | sort | paste -sd,)" ] || fail "step 2: JWKS should list both kids"
  me "$url" "$t1"
  expect_status 200 "step 2: token signed with the old key"
  refresh "$url" "$r1"
  expect_status 200 "step 2: refresh"
  t2=$TOKEN
  [ "$(jwt_header "$t2" | jq -r .kid)" = "$kid2" ] || fail "step 2: new tokens should carry $kid2"
  stop "$pid" keys3
  # Step 3: once old tokens have expired, drop the old public key.
  start_sesame keys4 "$port" sesame_deploy JWT_SECRET="$secret" JWT_PRIVATE_KEY_FILE="$d/k2/jwt-ed25519.pem"
  pid=$LAST_PID
  [ "$(jwks_kids "$url")" = "$kid2" ] || fail "step 3: JWKS should list $kid2 only"
  me "$url" "$t1"
  expect_code 401 invalid_token "step 3: token of the dropped key"
  me "$url" "$t2"
  expect_status 200 "step 3: token of the new key"
  stop "$pid" keys4
  ok "keys generate (0600 key, kid); HS256->EdDSA: old tokens 401, sessions survive; publish, switch, drop: old tokens accepted while their key is in JWT_PREVIOUS_PUBLIC_KEY_FILES, 401 after; JWKS follows"
}

check_secret_rotation() {
  CHECK="jwt secret rotation"
  local port url pid code pepper parent child t0 ms
  free_port port
  url=http://127.0.0.1:$port
  pepper=$(random_secret)
  start_sesame secret1 "$port" sesame_deploy JWT_SECRET="$(random_secret)"
  pid=$LAST_PID
  login "$url" "$T/secret1.out" rotate@example.com
  post_json "$url/auth/send-code" '{"email":"pending@example.com"}'
  expect_status 200 "send-code before the change"
  code=$(code_from "$T/secret1.out" pending@example.com) || fail "no code"
  stop "$pid" secret1
  start_sesame secret2 "$port" sesame_deploy JWT_SECRET="$(random_secret)" OTP_SECRET="$pepper"
  pid=$LAST_PID
  me "$url" "$TOKEN"
  expect_code 401 invalid_token "access token signed with the old JWT_SECRET"
  refresh "$url" "$REFRESH"
  expect_status 200 "refresh token issued before the change"
  me "$url" "$TOKEN"
  expect_status 200 "access token from that refresh"
  post_json "$url/auth/verify-code" "{\"email\":\"pending@example.com\",\"code\":\"$code\"}"
  expect_code 401 invalid_code "a code sent before the change (pepper derived from the old JWT_SECRET)"
  post_json "$url/auth/send-code" '{"email":"pinned@example.com"}'
  expect_status 200 "send-code after the change"
  code=$(code_from "$T/secret2.out" pinned@example.com) || fail "no code"
  parent=$REFRESH
  refresh "$url" "$parent"
  expect_status 200 "refresh just before the next change"
  t0=$(date +%s%N)
  child=$REFRESH
  # Control: without a change, a racing tab replaying the parent gets the same child.
  refresh "$url" "$parent"
  expect_status 200 "control: the parent replayed within the reuse interval, same secret"
  [ "$REFRESH" = "$child" ] || fail "control: the replayed parent got another refresh token than the child"
  stop "$pid" secret2
  start_sesame secret3 "$port" sesame_deploy JWT_SECRET="$(random_secret)" OTP_SECRET="$pepper"
  pid=$LAST_PID
  post_json "$url/auth/verify-code" "{\"email\":\"pinned@example.com\",\"code\":\"$code\"}"
  expect_status 200 "a code sent before the change, with OTP_SECRET set"
  # The same replay within REFRESH_REUSE_INTERVAL (10 s) of the rotation, across the change,
  # is reuse: the expected child is derived from the secret.
  ms=$(ms_since "$t0")
  ((ms < 9000)) || fail "the restart took ${ms} ms: the replay below would no longer be within the 10 s interval"
  refresh "$url" "$parent"
  expect_code 401 invalid_refresh_token "parent replayed ${ms} ms after its rotation, across the change"
  refresh "$url" "$child"
  expect_code 401 invalid_refresh_token "the child after that reuse"
  stop "$pid" secret3
  ok "old access tokens 401, refresh tokens keep working; pending codes void unless OTP_SECRET is set and kept; a tab racing the restart ends its session ($ms ms after the rotation; the same replay before the change got the same child)"
}

check_backup() {
  CHECK=backup
  local d=$T/backup port url pid t r tbl a b n
  mkdir -p "$d"
  login "$MAIN" "$T/main.out" backup@example.com
  t=$TOKEN r=$REFRESH
  pg_dump --format=custom --file="$d/sesame.dump" "$PG_BASE/sesame_deploy" 2>"$d/dump.err" || fail "pg_dump: $(cat "$d/dump.err")"
  fresh_db sesame_deploy_restore
  pg_restore --no-owner --exit-on-error --dbname="$PG_BASE/sesame_deploy_restore" "$d/sesame.dump" 2>"$d/restore.err" ||
    fail "pg_restore: $(cat "$d/restore.err")"
  for tbl in users sessions refresh_tokens audit_events _sqlx_migrations; do
    a=$(sql sesame_deploy "SELECT count(*) FROM $tbl")
    b=$(sql sesame_deploy_restore "SELECT count(*) FROM $tbl")
    [ "$a" = "$b" ] || fail "$tbl: $a rows, $b restored"
  done
  free_port port
  url=http://127.0.0.1:$port
  start_sesame restored "$port" sesame_deploy_restore JWT_SECRET="$SECRET_MAIN"
  pid=$LAST_PID
  me "$url" "$t"
  expect_status 200 "access token on the restored database"
  refresh "$url" "$r"
  expect_status 200 "refresh token on the restored database"
  # After restoring an old dump: end every session (logouts since the dump were lost).
  sql sesame_deploy_restore "UPDATE sessions SET revoked_at = now(), revoke_reason = 'revoked' WHERE revoked_at IS NULL" >/dev/null
  refresh "$url" "$REFRESH"
  expect_code 401 invalid_refresh_token "refresh after revoking every session"
  stop "$pid" restored
  # AUDIT_RETENTION: `sesame cleanup` deletes older rows, keeps the rest.
  sql sesame_deploy_restore "INSERT INTO audit_events (event, success, created_at) VALUES ('deploy.old_event', true, now() - interval '100 days')"
  n=$(sql sesame_deploy_restore "SELECT count(*) FROM audit_events WHERE created_at > now() - interval '1 day'")
  (cd "$T/run" && exec env -i PATH="$PATH" HOME="$T/run" DATABASE_URL="$PG_BASE/sesame_deploy_restore" \
    AUDIT_RETENTION=90d LOG_FORMAT=json "$SESAME_BIN" cleanup) >"$d/cleanup.out" 2>&1 || fail "sesame cleanup: $(tail -n 3 "$d/cleanup.out")"
  [ "$(sql sesame_deploy_restore "SELECT count(*) FROM audit_events WHERE event = 'deploy.old_event'")" = 0 ] ||
    fail "AUDIT_RETENTION=90d kept a 100-day-old event"
  [ "$(sql sesame_deploy_restore "SELECT count(*) FROM audit_events WHERE created_at > now() - interval '1 day'")" = "$n" ] ||
    fail "cleanup deleted recent events"
  ok "pg_dump -Fc / pg_restore: users, sessions, tokens, audit rows restored; tokens work on the restored database; revoking every session there; AUDIT_RETENTION=90d cleanup"
}

check_logrotate() {
  CHECK=logrotate
  local d=$T/logrotate conf out port url pid i n total
  mkdir -p "$d/log"
  conf=$d/logrotate.conf
  # deploy/logrotate.conf on the test's folder, as the current user (no `sesame` user here).
  sed -e "s#/var/log/sesame/#$d/log/#" -e "s#sesame sesame#$(id -un) $(id -gn)#g" \
    "$deploy/logrotate.conf" >"$conf"
  grep -q "^$d/log/\*.jsonl {" "$conf" && ! grep -q 'sesame sesame' "$conf" || fail "could not rewrite deploy/logrotate.conf"
  grep -qx ' *create 0640 .*' "$conf" && ! grep -v '^ *#' "$conf" | grep -q copytruncate || fail "expected 'create', not copytruncate"
  echo '{}' >"$d/log/metrics.jsonl"
  out=$(logrotate -d -s "$d/state" "$conf" 2>&1) || fail "logrotate -d: $out"
  ! grep -qi '^error' <<<"$out" || fail "logrotate -d: $(grep -i '^error' <<<"$out")"
  rm -f "$d/log/metrics.jsonl"

  # Real rotations while sesame writes: every line lands once, in the old or the new file.
  free_port port
  url=http://127.0.0.1:$port
  start_sesame logrotate_run "$port" sesame_deploy METRICS_FORMAT=file METRICS_FILE_PATH="$d/log/metrics.jsonl"
  pid=$LAST_PID
  emit() { # two lines each (otp.generated, otp.sent), with the address
    for i in $(seq "$1" "$2"); do
      post_json "$url/auth/send-code" "{\"email\":\"lr-$i@example.com\"}"
      expect_status 200 "send-code lr-$i"
    done
  }
  wait_lines() { # FILE N
    for i in $(seq 50); do
      [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ] && return 0
      sleep 0.1
    done
    fail "$1 has $(wc -l <"$1") lines, expected $2"
  }
  emit 1 20
  wait_lines "$d/log/metrics.jsonl" 40
  logrotate -f -s "$d/state" "$conf" 2>"$d/rotate1.err" || fail "logrotate: $(cat "$d/rotate1.err")"
  compgen -G "$d/log/metrics.jsonl.1*" >/dev/null && [ -f "$d/log/metrics.jsonl" ] || fail "no rotation: $(cd "$d/log" && echo *)"
  [ "$(stat -c %a "$d/log/metrics.jsonl")" = 640 ] || fail "the new file is not 0640"
  emit 21 30 # within sesame's 1 s check: these may still go to the renamed file
  sleep 1.5
  emit 31 50
  wait_lines "$d/log/metrics.jsonl" 40
  grep -q '"lr-50@example.com"' "$d/log/metrics.jsonl" || fail "sesame did not reopen the new file"
  logrotate -f -s "$d/state" "$conf" 2>"$d/rotate2.err" || fail "logrotate (2nd): $(cat "$d/rotate2.err")"
  compgen -G "$d/log/metrics.jsonl.2*" >/dev/null || fail "2nd rotation: $(cd "$d/log" && echo *)"
  sleep 1.2
  emit 51 60
  stop "$pid" logrotate_run
  total=$(zcat -f "$d/log/"metrics.jsonl* | wc -l)
  [ "$total" = 120 ] || fail "$total lines across the rotated files, expected 120"
  for i in $(seq 60); do
    n=$(zcat -f "$d/log/"metrics.jsonl* | grep -c "\"lr-$i@example.com\"" || true)
    [ "$n" = 2 ] || fail "lr-$i: $n lines, expected 2"
  done
  ok "logrotate -d clean; 2 forced rotations (create 0640, delaycompress) under traffic: sesame reopened the new file, none of 120 lines lost or doubled"
}

# pgbouncer_up DIR DB MODE SIZE: PgBouncer on a free port in front of database DB, pool_mode
# MODE with SIZE server connections; sets PGB_URL (postgres://user@127.0.0.1:port/DB) and
# PGB_PID.
pgbouncer_up() {
  local d=$1 db=$2 mode=$3 size=$4 who hostport user pw port i
  mkdir -p "$d"
  who=${PG_BASE#*://}
  hostport=${who#*@}
  user=${who%@*}
  pw=
  case $user in *:*) pw=${user#*:} user=${user%%:*} ;; esac
  free_port port
  # Trust on loopback between sesame and PgBouncer; PgBouncer logs in to PostgreSQL as PG_BASE's user.
  printf '"%s" "%s"\n' "$user" "$pw" >"$d/userlist.txt"
  cat >"$d/pgbouncer.ini" <<INI
[databases]
$db = host=${hostport%:*} port=${hostport##*:} dbname=$db user=$user
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $d/userlist.txt
pool_mode = $mode
default_pool_size = $size
max_client_conn = 50
ignore_startup_parameters = extra_float_digits
INI
  # PgBouncer refuses to run as root: -u drops to an unprivileged user after reading its files.
  local as_user=()
  [ "$(id -u)" -ne 0 ] || as_user=(-u "$(id -un postgres 2>/dev/null || echo nobody)")
  pgbouncer "${as_user[@]}" "$d/pgbouncer.ini" >"$d/pgbouncer.log" 2>&1 &
  PGB_PID=$!
  track "$PGB_PID"
  for i in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$PGB_PID" 2>/dev/null || fail "pgbouncer exited: $(tail -n 5 "$d/pgbouncer.log")"
    sleep 0.1
  done
  PGB_URL="postgres://$user@127.0.0.1:$port/$db"
}

# pgbouncer_flow A B NAME_A DB SERVERS: the whole flow across instances A and B (code on A,
# me/refresh on B, refresh/logout on A), then at most SERVERS server connections to DB.
pgbouncer_flow() {
  local a=$1 b=$2 name_a=$3 db=$4 servers=$5 n
  login "$a" "$T/$name_a.out" "pgbouncer-$db@example.com"
  me "$b" "$TOKEN"
  expect_status 200 "me on B through PgBouncer"
  refresh "$b" "$REFRESH"
  expect_status 200 "refresh on B through PgBouncer"
  refresh "$a" "$REFRESH"
  expect_status 200 "refresh on A through PgBouncer"
  post_json "$a/auth/logout" "{\"refreshToken\":\"$REFRESH\"}"
  expect_status 200 "logout on A through PgBouncer"
  refresh "$b" "$REFRESH"
  expect_code 401 invalid_refresh_token "refresh after logout"
  # Every server connection is PgBouncer's, and no more than its pool.
  n=$(sql postgres "SELECT count(*) FROM pg_stat_activity WHERE datname = '$db'")
  ((n >= 1 && n <= servers)) || fail "$n server connections to $db, expected 1 to $servers (default_pool_size)"
  SERVERS_SEEN=$n
}

# pgbouncer_cleanup DIR DB URL [VAR=VALUE...]: `sesame cleanup` through PgBouncer deletes an
# expired code and leaves no advisory lock behind.
pgbouncer_cleanup() {
  local d=$1 db=$2 url=$3
  shift 3
  sql "$db" "INSERT INTO otp_codes (id, email, code_hash, created_at, expires_at) VALUES (gen_random_uuid(), 'gone@example.com', '\$argon2id\$x', now() - interval '2 days', now() - interval '1 day')" >/dev/null
  (cd "$T/run" && exec env -i PATH="$PATH" HOME="$T/run" DATABASE_URL="$url" LOG_FORMAT=json "$@" "$SESAME_BIN" cleanup) \
    >"$d/cleanup.out" 2>&1 || fail "sesame cleanup through PgBouncer: $(tail -n 3 "$d/cleanup.out")"
  [ "$(sql "$db" "SELECT count(*) FROM otp_codes WHERE email = 'gone@example.com'")" = 0 ] ||
    fail "cleanup through PgBouncer kept an expired code"
  [ "$(sql "$db" "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")" = 0 ] ||
    fail "an advisory lock is left held after cleanup"
}

check_pgbouncer() {
  CHECK=pgbouncer
  local d=$T/pgbouncer pa pb a b db=sesame_deploy_pgb version
  fresh_db "$db"
  pgbouncer_up "$d" "$db" session 6
  version=$(pgbouncer -V | sed -n '1s/^PgBouncer //p')
  free_port pa
  free_port pb
  a=http://127.0.0.1:$pa b=http://127.0.0.1:$pb
  # Two instances through PgBouncer, started together (migrations once), 2 connections each.
  launch_sesame pgb_a "$pa" "$db" DATABASE_URL="$PGB_URL" DATABASE_MAX_CONNECTIONS=2 JWT_SECRET="$SECRET_MAIN"
  local pid_a=$LAST_PID
  launch_sesame pgb_b "$pb" "$db" DATABASE_URL="$PGB_URL" DATABASE_MAX_CONNECTIONS=2 JWT_SECRET="$SECRET_MAIN"
  local pid_b=$LAST_PID
  wait_healthy pgb_a "$a" "$pid_a"
  wait_healthy pgb_b "$b" "$pid_b"
  pgbouncer_flow "$a" "$b" pgb_a "$db" 6
  stop "$pid_b" pgb_b
  stop "$pid_a" pgb_a
  pgbouncer_cleanup "$d" "$db" "$PGB_URL"
  end "$PGB_PID"
  ok "PgBouncer $version, pool_mode=session: 2 instances started together, code on A, me/refresh on B, refresh/logout on A, $SERVERS_SEEN server connections; sesame cleanup deleted and left no lock"
}

check_pgbouncer_transaction() {
  CHECK=pgbouncer_transaction
  local d=$T/pgbouncer_tx pa pb a b db=sesame_deploy_pgbt i base before after pids bad chain=0
  fresh_db "$db"
  # Two server connections under sixteen client connections: every transaction may land on
  # a server another client (or the other instance) prepared statements on.
  pgbouncer_up "$d" "$db" transaction 2
  free_port pa
  free_port pb
  a=http://127.0.0.1:$pa b=http://127.0.0.1:$pb
  launch_sesame pgbt_a "$pa" "$db" DATABASE_URL="$PGB_URL" DATABASE_STATEMENT_CACHE=0 DATABASE_MAX_CONNECTIONS=8 \
    JWT_SECRET="$SECRET_MAIN" RATE_LIMIT_ENABLED=true
  local pid_a=$LAST_PID
  launch_sesame pgbt_b "$pb" "$db" DATABASE_URL="$PGB_URL" DATABASE_STATEMENT_CACHE=0 DATABASE_MAX_CONNECTIONS=8 \
    JWT_SECRET="$SECRET_MAIN" RATE_LIMIT_ENABLED=true
  local pid_b=$LAST_PID
  wait_healthy pgbt_a "$a" "$pid_a"
  wait_healthy pgbt_b "$b" "$pid_b"
  pgbouncer_flow "$a" "$b" pgbt_a "$db" 2
  # A refresh chain across the instances, then a burst on both at once: bearer checks,
  # logouts that record events, rate-limit counters; every answer 200, every event kept.
  login "$b" "$T/pgbt_b.out" "pgbouncer-chain@example.com"
  for i in $(seq 10); do
    base=$a
    ((i % 2)) || base=$b
    refresh "$base" "$REFRESH"
    expect_status 200 "refresh $i of a chain through PgBouncer (transaction pooling)"
    chain=$i
  done
  before=$(sql "$db" "SELECT count(*) FROM audit_events")
  : >"$d/statuses"
  for i in $(seq 40); do
    pids=()
    for base in "$a" "$b"; do
      curl -sS -o /dev/null -w '%{http_code}\n' --max-time 20 -H "authorization: Bearer $TOKEN" \
        "$base/auth/me" >>"$d/statuses" &
      pids+=($!)
      curl -sS -o /dev/null -w '%{http_code}\n' --max-time 20 -H 'content-type: application/json' \
        --data-binary "{\"refreshToken\":\"$(printf '%043d' "$i")\"}" "$base/auth/logout" >>"$d/statuses" &
      pids+=($!)
    done
    wait "${pids[@]}" || true
  done
  bad=$(grep -cv '^200$' "$d/statuses" || true)
  [ "$(wc -l <"$d/statuses")" = 160 ] && [ "$bad" = 0 ] ||
    fail "burst through PgBouncer: $bad of $(wc -l <"$d/statuses") answers not 200: $(sort "$d/statuses" | uniq -c | tr '\n' ' '); $(grep -h '"ERROR"' "$T/pgbt_a.err" "$T/pgbt_b.err" | tail -n 2)"
  after=$(sql "$db" "SELECT count(*) FROM audit_events")
  [ $((after - before)) = 80 ] || fail "80 logouts through PgBouncer recorded $((after - before)) events"
  ! grep -q '"level":"ERROR"' "$T/pgbt_a.err" "$T/pgbt_b.err" ||
    fail "an instance logged an error: $(grep -h '"level":"ERROR"' "$T/pgbt_a.err" "$T/pgbt_b.err" | head -n 2)"
  stop "$pid_b" pgbt_b
  stop "$pid_a" pgbt_a
  pgbouncer_cleanup "$d" "$db" "$PGB_URL" DATABASE_STATEMENT_CACHE=0
  end "$PGB_PID"
  ok "pool_mode=transaction, 2 server connections, DATABASE_STATEMENT_CACHE=0: 2 instances (8 connections each) started together, the flow across them, a $chain-refresh chain alternating A/B, 160 concurrent me/logout answers all 200 with their 80 events; sesame cleanup deleted and left no lock"
}

checks=("$@")
((${#checks[@]})) || checks=(systemd_unit production nginx caddy instances keys secret_rotation backup pgbouncer pgbouncer_transaction logrotate failover)
for c in "${checks[@]}"; do
  declare -F "check_$c" >/dev/null || fail "no check named '$c'"
done
for c in "${checks[@]}"; do "check_$c"; done
CHECK="main instance"
stop "$MAIN_PID" main
echo "all deploy checks passed in $((SECONDS - started)) s"
