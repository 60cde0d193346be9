#!/usr/bin/env bash
# Drives sesame through clients generated from openapi.yaml, the way teams make them:
#   - TypeScript: openapi-typescript (types) + openapi-fetch (calls), type-checked with tsc --noEmit
#   - Python:     openapi-python-client
# against the real server, with email going to a local SMTP sink (smtp_sink.py):
#   send code -> read the code from the sink -> verify code -> me -> refresh -> logout
#   (-> the logged-out refresh token is refused with 401 invalid_refresh_token);
# and clients generated the same way from openapi-admin.yaml run the support flow on the
# admin listener: find the user by address -> its sessions -> disable -> enable -> delete.
# The server also sends its webhooks to webhook_receiver.py, which verifies each one with the
# `standardwebhooks` Python package; every sign-up's user.created must arrive verified.
#
#   tests/clients/run.sh
#
# Settings (environment):
#   SESAME_BIN  the server binary (default: <repo>/target/debug/sesame)
#   PG_BASE     a PostgreSQL base URL without a database, e.g. postgres://postgres@127.0.0.1:5432;
#               default: the private cluster of `scripts/pg.sh start`. The database
#               `sesame_clients` is dropped and created afresh on each run.
#   PYTHON      the Python (>= 3.11) that makes tests/clients/.venv (default: python3)
#
# npm packages (package-lock.json, via `npm ci`) and the virtualenv (requirements.txt) are
# installed only when missing or when their pins changed. Both clients are generated on
# every run into git-ignored folders (generated/, build/). Exits non-zero on any failure.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)
SESAME_BIN=${SESAME_BIN:-$repo/target/debug/sesame}
PYTHON=${PYTHON:-python3}
spec=$repo/openapi.yaml
admin_spec=$repo/openapi-admin.yaml
db=sesame_clients

say() { printf '==> %s\n' "$*"; }
die() { printf 'clients: %s\n' "$*" >&2; exit 1; }

[ -x "$SESAME_BIN" ] || die "no server binary at $SESAME_BIN (build it, or set SESAME_BIN)"
for tool in node npm psql curl "$PYTHON"; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH"
done
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$PYTHON is older than 3.11 (the generated Python client needs 3.11+; set PYTHON)"

work=$(mktemp -d "${TMPDIR:-/tmp}/sesame-clients.XXXXXX")
server_pid=
sink_pid=
receiver_pid=

stop() { # stop PID: SIGTERM, then wait up to 15 s, then SIGKILL
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$server_pid" ] && stop "$server_pid"
  [ -n "$sink_pid" ] && stop "$sink_pid"
  [ -n "$receiver_pid" ] && stop "$receiver_pid"
  if [ "$rc" -ne 0 ]; then
    if [ -s "$work/server.log" ]; then
      echo "--- last lines of the server log ($work/server.log):" >&2
      tail -n 30 "$work/server.log" >&2
    fi
    if [ -s "$work/sink.log" ]; then
      echo "--- sink log ($work/sink.log):" >&2
      tail -n 30 "$work/sink.log" >&2
    fi
    echo "clients: FAILED (exit $rc); logs and mail kept in $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sha() { cat "$@" | sha256sum | cut -d' ' -f1; }

# ---------------------------------------------------------------- tools (when missing/outdated)
npm_stamp=$here/node_modules/.sesame-installed
want="$(sha "$here/package.json" "$here/package-lock.json") node $(node --version)"
if [ "$(cat "$npm_stamp" 2>/dev/null)" != "$want" ]; then
  say "npm ci (tests/clients/node_modules)"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$npm_stamp"
else
  say "npm packages: up to date"
fi

venv=$here/.venv
venv_stamp=$venv/.sesame-installed
want="$(sha "$here/requirements.txt") $("$PYTHON" -c 'import sys; print(sys.version.split()[0], sys.executable)')"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv_stamp" 2>/dev/null)" != "$want" ]; then
  say "python venv (tests/clients/.venv)"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --require-virtualenv -r "$here/requirements.txt"
  echo "$want" >"$venv_stamp"
else
  say "python venv: up to date"
fi

# ---------------------------------------------------------------- generate and type-check
say "generate the TypeScript types (openapi-typescript)"
rm -rf "$here/generated/ts" "$here/build"
"$here/node_modules/.bin/openapi-typescript" "$spec" -o "$here/generated/ts/schema.d.ts" >"$work/gen-ts.log" 2>&1 \
  || { cat "$work/gen-ts.log" >&2; die "openapi-typescript failed on $spec"; }
"$here/node_modules/.bin/openapi-typescript" "$admin_spec" -o "$here/generated/ts/admin.d.ts" >"$work/gen-ts-admin.log" 2>&1 \
  || { cat "$work/gen-ts-admin.log" >&2; die "openapi-typescript failed on $admin_spec"; }

say "generate the Python client (openapi-python-client)"
mkdir -p "$here/generated/python"
# --fail-on-warning: a schema or operation the generator skipped is a failure, not a gap.
# .venv/bin on PATH: the generator formats its output with the ruff installed there.
(cd "$work" && PATH="$venv/bin:$PATH" "$venv/bin/openapi-python-client" generate \
  --path "$spec" --meta none --output-path "$here/generated/python/sesame_client" \
  --overwrite --fail-on-warning) >"$work/gen-py.log" 2>&1 \
  || { cat "$work/gen-py.log" >&2; die "openapi-python-client failed on $spec"; }
if grep -qi 'warning' "$work/gen-py.log"; then cat "$work/gen-py.log" >&2; die "openapi-python-client warned"; fi
(cd "$work" && PATH="$venv/bin:$PATH" "$venv/bin/openapi-python-client" generate \
  --path "$admin_spec" --meta none --output-path "$here/generated/python/sesame_admin_client" \
  --overwrite --fail-on-warning) >"$work/gen-py-admin.log" 2>&1 \
  || { cat "$work/gen-py-admin.log" >&2; die "openapi-python-client failed on $admin_spec"; }
if grep -qi 'warning' "$work/gen-py-admin.log"; then cat "$work/gen-py-admin.log" >&2; die "openapi-python-client warned"; fi

say "type-check the TypeScript client (tsc --noEmit)"
(cd "$here" && node_modules/.bin/tsc --noEmit -p tsconfig.json)
# Then emit build/flow.js to run (already checked above, so without checking again).
(cd "$here" && node_modules/.bin/tsc -p tsconfig.json --noCheck)

# ---------------------------------------------------------------- database, sink, server
if [ -z "${PG_BASE:-}" ]; then
  say "PostgreSQL: scripts/pg.sh start"
  PG_BASE=$("$repo/scripts/pg.sh" start)
fi
PG_BASE=${PG_BASE%/}
say "fresh database $db on $PG_BASE"
psql -X -q -v ON_ERROR_STOP=1 -d "$PG_BASE/postgres" \
  -c "SET client_min_messages = warning" \
  -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"

maildir=$work/mail
"$PYTHON" "$here/smtp_sink.py" --dir "$maildir" --port-file "$work/sink.port" >"$work/sink.log" 2>&1 &
sink_pid=$!
for _ in $(seq 100); do
  [ -s "$work/sink.port" ] && break
  kill -0 "$sink_pid" 2>/dev/null || die "the SMTP sink exited at start"
  sleep 0.1
done
[ -s "$work/sink.port" ] || die "the SMTP sink did not start within 10 s"
sink_port=$(cat "$work/sink.port")
say "SMTP sink on 127.0.0.1:$sink_port (mail in $maildir)"

webhook_secret=$("$PYTHON" -c 'import base64, os; print("whsec_" + base64.b64encode(os.urandom(32)).decode())')
"$venv/bin/python" "$here/webhook_receiver.py" serve --secret "$webhook_secret" \
  --port-file "$work/receiver.port" --out "$work/webhooks.jsonl" >"$work/receiver.log" 2>&1 &
receiver_pid=$!
for _ in $(seq 100); do
  [ -s "$work/receiver.port" ] && break
  kill -0 "$receiver_pid" 2>/dev/null || die "the webhook receiver exited at start"
  sleep 0.1
done
[ -s "$work/receiver.port" ] || die "the webhook receiver did not start within 10 s"
receiver_url=http://127.0.0.1:$(cat "$work/receiver.port")/hooks
say "webhook receiver on $receiver_url (standardwebhooks)"

free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
admin_port=$(free_port)
admin_token=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(32))')
base=http://127.0.0.1:$port
admin_base=http://127.0.0.1:$admin_port
# Started from the scratch folder, so that no .env of a checkout is read.
(cd "$work" && exec env DATABASE_URL="$PG_BASE/$db" PORT="$port" HOST=127.0.0.1 \
  ADMIN_PORT="$admin_port" ADMIN_TOKEN="$admin_token" \
  EMAIL_PROVIDER=smtp SMTP_URL="smtp://127.0.0.1:$sink_port?tls=none" \
  WEBHOOK_URLS="$receiver_url" WEBHOOK_SECRET="$webhook_secret" \
  RATE_LIMIT_ENABLED=false METRICS_FORMAT=none LOG_FORMAT=json RUST_LOG=warn \
  "$SESAME_BIN" serve) >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$base/health" || true)" = 200 ] && break
  kill -0 "$server_pid" 2>/dev/null || die "the server exited at start"
  sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$base/health" || true)" = 200 ] \
  || die "GET $base/health did not answer 200 within 60 s"
say "sesame on $base ($SESAME_BIN)"

# ---------------------------------------------------------------- the flows
passed=0
failed=0
say "typescript client (openapi-fetch)"
if SESAME_URL=$base MAILDIR=$maildir EMAIL=ts-client@example.com node "$here/build/flow.js"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
fi
say "python client (openapi-python-client)"
if SESAME_URL=$base MAILDIR=$maildir EMAIL=py-client@example.com "$venv/bin/python" "$here/flow.py"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
fi
say "typescript admin client (openapi-fetch): the support flow"
if ADMIN_URL=$admin_base ADMIN_TOKEN=$admin_token EMAIL=ts-client@example.com node "$here/build/flow_admin.js"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
fi
say "python admin client (openapi-python-client): the support flow"
if ADMIN_URL=$admin_base ADMIN_TOKEN=$admin_token EMAIL=py-client@example.com "$venv/bin/python" "$here/flow_admin.py"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
fi

say "webhooks verified by standardwebhooks (Python)"
if "$venv/bin/python" "$here/webhook_receiver.py" check --out "$work/webhooks.jsonl" \
  ts-client@example.com py-client@example.com; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
fi

kill -0 "$server_pid" 2>/dev/null || { echo "clients: the server died during the run" >&2; failed=$((failed + 1)); }
echo "clients: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
