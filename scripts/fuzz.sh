#!/usr/bin/env bash
# Property-based fuzzing of the API from its own OpenAPI document, with
# schemathesis, against the real server binary and a real database.
#
#   scripts/fuzz.sh [extra schemathesis arguments]
#
# Installs schemathesis into the git-ignored .venv-tools/, starts
# target/debug/sesame on a free port against a fresh database (console email,
# rate limits off so every example reaches the handlers), signs in (through
# scripts/fuzz_hooks.py, again after any 401) so the bearer-protected
# operations are exercised too, then runs every operation with
# FUZZ_EXAMPLES examples (default 200) and seed FUZZ_SEED (default 20261127)
# through the phases examples, coverage, fuzzing and stateful (which follows
# the documents' links), with every check (`--checks all`); then the same for
# the admin document on the admin listener, with ADMIN_TOKEN.
#
# Two checks are swapped, none is dropped: `positive_data_acceptance` (ST202, a
# schema-valid request must not be refused) is replaced by
# `positive_data_acceptance_but_business_refusals` from scripts/fuzz_hooks.py,
# the same check letting through only the documented 400s that no schema can
# express (a `redirectTo` off REDIRECT_ALLOW_LIST, a `cursor` the server did not
# issue, a stats window out of range); `negative_data_rejection` (ST201, a
# schema-violating request must be refused) by
# `negative_data_rejection_but_email_format`, which lets through a 2xx when the
# only broken part is an address's `format: email` (the pattern is the rule);
# see that file.
# Called by scripts/test.sh; exits non-zero on any failure, and when the server
# logs an error.
set -euo pipefail
cd "$(dirname "$0")/.."

ST_VERSION=4.32.5
VENV=.venv-tools
if ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$ST_VERSION"; then
  command -v python3 >/dev/null || { echo "sesame: python3 is needed for the API fuzzing (schemathesis)" >&2; exit 1; }
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
fi

if [ -n "${DATABASE_URL:-}" ]; then base=${DATABASE_URL%/*}; else base=$(scripts/pg.sh start); fi
db=sesame_fuzz
psql -X -q -v ON_ERROR_STOP=1 -d "$base/postgres" -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"

bin=${SESAME_BIN:-${CARGO_TARGET_DIR:-target}/debug/sesame}
[ -x "$bin" ] || cargo build --quiet --locked --bin sesame
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
admin_port=$(free_port)
admin_token=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
work=$(mktemp -d)
log=$work/server.log
DATABASE_URL=$base/$db PORT=$port ADMIN_PORT=$admin_port ADMIN_TOKEN=$admin_token EMAIL_PROVIDER=console \
  RATE_LIMIT_ENABLED=false METRICS_FORMAT=none LOG_FORMAT=json RUST_LOG=warn "$bin" serve >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
url=http://127.0.0.1:$port
up=
for _ in $(seq 1 300); do curl -fsS "$url/health" >/dev/null 2>&1 && { up=1; break; }; sleep 0.1; done
[ -n "$up" ] || { echo "sesame: the server did not start for fuzzing:" >&2; cat "$log" >&2; exit 1; }

# fuzz DOCUMENT_URL [extra arguments]: one schemathesis run.
fuzz() {
  local doc=$1
  shift
  SCHEMATHESIS_HOOKS=fuzz_hooks PYTHONPATH=scripts "$VENV/bin/st" run "$doc" \
    --checks all \
    --exclude-checks positive_data_acceptance,negative_data_rejection \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "${FUZZ_EXAMPLES:-200}" \
    --seed "${FUZZ_SEED:-20261127}" \
    --request-timeout 10 \
    --no-color "$@"
}
status=0
# The public API, signed in by the hooks (again after each 401: fuzzed logouts end sessions).
FUZZ_SIGN_IN_URL=$url FUZZ_SERVER_LOG=$log fuzz "$url/openapi.json" "$@" || status=$?
# The admin API, on its own listener, with its own token.
fuzz "http://127.0.0.1:$admin_port/openapi.json" --header "Authorization: Bearer $admin_token" "$@" || status=$?
if grep -q '"level":"ERROR"' "$log"; then
  echo "sesame: the server logged errors while fuzzed:" >&2
  grep '"level":"ERROR"' "$log" | head -n 20 >&2
  status=1
fi
exit $status
