#!/usr/bin/env bash
# Browser tests, in headless Debian Chromium driven by playwright-core:
#   swagger ui    — /docs: "Try it out" on send_code, Authorize, "Try it out" on GET /auth/me
#   example page  — examples/web end to end: code, refresh, 401 retry, tabs, magic link, logout
#   verify page   — sesame's own sign-in page (GET /auth/verify, /auth/verify-magic-link): opening
#                   it uses nothing; its button hands the tokens to FRONTEND_URL; its CSP holds
#   client tabs   — the sesame-client package (clients/typescript) in three tabs sharing
#                   localStorage, 3 s access tokens: one POST /auth/refresh per rotation, no sign-out
#   dashboard     — the operators' dashboard on the admin listener: after a scripted mix it shows
#                   the totals of `sesame audit summary`; disabling a user ends its session; no
#                   request leaves the admin listener; screenshots at 1280 and 390 px
# Before them, the client package is built (openapi-typescript + tsc) and its unit tests run
# (node --test), one "client unit …: ok" line each; the example page uses that build.
#
#   tests/browser/run.sh            prints one line per test; exits non-zero on any failure
#
# Settings: SESAME_BIN (default <repo>/target/debug/sesame), PG_BASE (a PostgreSQL
# URL without a database, e.g. postgres://postgres@127.0.0.1:5432; default: the
# private cluster of scripts/pg.sh), VERBOSE=1 (show each test's steps).
# Installs what is missing: Debian's chromium (apt) and the npm packages (npm ci, here and in
# clients/typescript when its package.json or package-lock.json changed).
# Screenshots and logs go to tests/browser/out/. Nothing leaves 127.0.0.1.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)
out=$here/out
SESAME_BIN=${SESAME_BIN:-$repo/target/debug/sesame}
CHROMIUM=/usr/bin/chromium

die() { echo "browser tests: $*" >&2; exit 1; }

[ -x "$SESAME_BIN" ] || die "no server binary at $SESAME_BIN (cargo build, or set SESAME_BIN)"
command -v node >/dev/null || die "node (>= 20) is needed"
[ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ] || die "node >= 20 is needed, found $(node --version)"
command -v npm >/dev/null || die "npm is needed"
command -v psql >/dev/null || die "psql is needed"

# --- Installs, only when missing ------------------------------------------------
if [ ! -x "$CHROMIUM" ]; then
  [ "$(id -u)" -eq 0 ] || die "$CHROMIUM is missing: apt-get install chromium (as root)"
  echo "installing chromium (apt-get)…" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 chromium >/dev/null
fi
want=$(node -p 'require(process.argv[1]).packages["node_modules/playwright-core"].version' "$here/package-lock.json")
have=$(node -p 'try { require(process.argv[1]).version } catch { "" }' "$here/node_modules/playwright-core/package.json")
if [ "$want" != "$have" ]; then
  echo "installing npm packages (npm ci)…" >&2
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

client=$repo/clients/typescript
client_stamp=$client/node_modules/.sesame-installed
want="$(cat "$client/package.json" "$client/package-lock.json" | sha256sum | cut -d' ' -f1) node $(node --version)"
if [ "$(cat "$client_stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing the client package's npm packages (npm ci)…" >&2
  (cd "$client" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$want" >"$client_stamp"
fi

# --- PostgreSQL -------------------------------------------------------------------
if [ -z "${PG_BASE:-}" ]; then
  PG_BASE=$("$repo/scripts/pg.sh" start)
fi
export PGOPTIONS='-c client_min_messages=warning'
fresh_db() {
  psql -X -q -v ON_ERROR_STOP=1 -d "$PG_BASE/postgres" \
    -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null
}

# --- Everything we start, stopped on exit -----------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/sesame-browser.XXXXXX")
pids=()
dbs=()
cleanup() {
  local pid db
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for db in "${dbs[@]}"; do
    psql -X -q -d "$PG_BASE/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$out"
rm -f "$out"/*-failed.png "$out"/*.log

free_port() {
  node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'
}

# The SMTP sink: prints its port, keeps each message as a file in $work/mail.
node "$here/smtp-sink.mjs" "$work/mail" >"$work/sink.port" 2>"$out/smtp-sink.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/sink.port" ] && break; sleep 0.05; done
[ -s "$work/sink.port" ] || die "the SMTP sink did not start: $(cat "$out/smtp-sink.log")"
sink_port=$(cat "$work/sink.port")

page_port=$(free_port)
page_origin=http://127.0.0.1:$page_port

# start_sesame NAME PORT [VAR=value…]: a fresh database sesame_browser_NAME_<pid> and a
# server on PORT, with nothing of the caller's environment or .env files; no admin
# listener unless VAR says ADMIN_PORT (the default port would be taken by the first one).
start_sesame() {
  local name=$1 port=$2 db=sesame_browser_${1}_$$
  shift 2
  fresh_db "$db"
  dbs+=("$db")
  mkdir -p "$work/$name"
  (cd "$work/$name" && exec env -i PATH="$PATH" HOME="$HOME" \
    DATABASE_URL="$PG_BASE/$db" HOST=127.0.0.1 PORT="$port" \
    EMAIL_PROVIDER=smtp SMTP_URL="smtp://127.0.0.1:$sink_port?tls=none" \
    RATE_LIMIT_ENABLED=false METRICS_FORMAT=none LOG_FORMAT=json RUST_LOG=warn \
    CORS_ALLOWED_ORIGINS="$page_origin" FRONTEND_URL="$page_origin" ADMIN_PORT=0 \
    "$@" "$SESAME_BIN" serve) >"$out/sesame-$name.log" 2>&1 &
  pids+=($!)
  eval "pid_$name=$!"
}

wait_healthy() {
  local name=$1 port=$2 pid_var=pid_$1
  for _ in $(seq 300); do
    if ! kill -0 "${!pid_var}" 2>/dev/null; then
      cat "$out/sesame-$name.log" >&2
      die "sesame ($name) exited during start-up (log above)"
    fi
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ] && return 0
    sleep 0.1
  done
  die "sesame ($name) did not answer GET /health with 200 within 30 s"
}

swagger_port=$(free_port)
example_port=$(free_port)
verify_port=$(free_port)
app_port=$(free_port)
tabs_port=$(free_port)
tabs_page_port=$(free_port)
dash_port=$(free_port)
dash_admin_port=$(free_port)
dash_token=browser-admin-token-0123456789abcdef
start_sesame swagger "$swagger_port"
# A 2 s access token, so the page must refresh it while the test watches.
start_sesame example "$example_port" ACCESS_TOKEN_EXPIRY=2s
# The frontend (served by verify-page.mjs) on another origin, with a path; links may
# also lead to sesame's own page.
app_url=http://127.0.0.1:$app_port/app/
start_sesame verify "$verify_port" FRONTEND_URL="$app_url" CORS_ALLOWED_ORIGINS="http://127.0.0.1:$app_port" \
  REDIRECT_ALLOW_LIST="http://127.0.0.1:$verify_port" ACCESS_TOKEN_EXPIRY=15m
# The tabs test: 3 s access tokens, so that it sees several rotations within seconds.
start_sesame tabs "$tabs_port" ACCESS_TOKEN_EXPIRY=3s CORS_ALLOWED_ORIGINS="http://127.0.0.1:$tabs_page_port"
# The dashboard test: rate limits on (it records a refusal), any second refresh is reuse.
start_sesame dash "$dash_port" ADMIN_PORT="$dash_admin_port" ADMIN_TOKEN="$dash_token" \
  RATE_LIMIT_ENABLED=true REFRESH_REUSE_INTERVAL=0s
wait_healthy swagger "$swagger_port"
wait_healthy example "$example_port"
wait_healthy verify "$verify_port"
wait_healthy tabs "$tabs_port"
wait_healthy dash "$dash_port"

# --- The tests ----------------------------------------------------------------------
failed=0

# The client package: build it (the example page and the tabs test load its dist/), then
# its unit tests, one line per test (unit-lines.mjs).
if (cd "$client" && rm -rf dist && npm run --silent build) >"$out/client-build.log" 2>&1; then
  echo "client package build: ok"
else
  failed=1
  echo "client package build: FAILED (log: $out/client-build.log)"
  sed 's/^/    /' "$out/client-build.log" >&2
fi
rc=0
(cd "$client" && timeout 120 node --test --test-reporter="$here/unit-lines.mjs" test/*.test.mjs) \
  >"$work/client-unit.out" 2>"$out/client-unit.log" || rc=$?
cat "$work/client-unit.out"
if [ "$rc" -ne 0 ]; then
  failed=1
  # A failure the reporter did not name (a crash, a timeout) still counts as one.
  if ! grep -q ': FAILED' "$work/client-unit.out"; then
    echo "client unit tests: FAILED (exit $rc, log: $out/client-unit.log)"
    sed 's/^/    /' "$out/client-unit.log" >&2
  fi
fi
run_test() { # run_test LABEL SCRIPT VAR=value…  (the script prints "LABEL: ok" on success)
  local label=$1 script=$2 log=$out/${2%.mjs}.log result
  shift 2
  if result=$(env "$@" MAILDIR="$work/mail" OUT_DIR="$out" CHROMIUM="$CHROMIUM" \
    timeout 150 node "$here/$script" 2>"$log") && [ "$result" = "$label: ok" ]; then
    echo "$result"
    if [ "${VERBOSE:-}" = 1 ]; then sed 's/^/  /' "$log"; fi
  else
    failed=1
    echo "$label: FAILED (log: $log)"
    sed 's/^/    /' "$log" >&2
  fi
}

run_test "swagger ui" swagger.mjs SESAME_URL="http://127.0.0.1:$swagger_port"
run_test "example page" example.mjs SESAME_URL="http://127.0.0.1:$example_port" PAGE_PORT="$page_port" \
  EXAMPLE_DIR="$repo/examples/web"
run_test "verify page" verify-page.mjs SESAME_URL="http://127.0.0.1:$verify_port" FRONTEND_URL="$app_url" \
  DATABASE_URL="$PG_BASE/sesame_browser_verify_$$"
run_test "client tabs" tabs.mjs SESAME_URL="http://127.0.0.1:$tabs_port" PAGE_PORT="$tabs_page_port" \
  CLIENT_DIR="$client" DATABASE_URL="$PG_BASE/sesame_browser_tabs_$$"
run_test "dashboard" dashboard.mjs SESAME_URL="http://127.0.0.1:$dash_port" \
  ADMIN_URL="http://127.0.0.1:$dash_admin_port" ADMIN_TOKEN="$dash_token" SESAME_BIN="$SESAME_BIN" \
  DATABASE_URL="$PG_BASE/sesame_browser_dash_$$"

exit "$failed"
