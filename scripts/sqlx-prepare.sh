#!/usr/bin/env bash
# Regenerates the sqlx offline query data in .sqlx/ (what lets `cargo build` work
# with no database), by compiling every target against a scratch database with
# the migrations applied. sqlx 0.7+ keeps this data as one file per query in
# .sqlx/; the single sqlx-data.json of sqlx <= 0.6 is no longer read.
#
#   scripts/sqlx-prepare.sh           rewrite .sqlx/
#   scripts/sqlx-prepare.sh --check   fail if .sqlx/ is not what the code needs
set -euo pipefail
cd "$(dirname "$0")/.."

# A scratch database next to DATABASE_URL's, or in this checkout's private cluster.
db=sesame_sqlx
if [ -n "${DATABASE_URL:-}" ]; then
  base=${DATABASE_URL%/*}
  psql_() { local d=$1; shift; psql -X -q -v ON_ERROR_STOP=1 -d "$base/$d" "$@"; }
else
  base=$(scripts/pg.sh start)
  psql_() { scripts/pg.sh psql "$@"; }
fi
psql_ postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
for f in migrations/*.sql; do psql_ "$db" -f "$f" >/dev/null; done

out=$PWD/.sqlx
if [ "${1:-}" = "--check" ]; then out=$(mktemp -d); fi
rm -rf "$out"; mkdir -p "$out"
# Cargo does not re-run proc macros when only environment variables change.
touch src/lib.rs tests/api/main.rs
SQLX_OFFLINE=false SQLX_OFFLINE_DIR=$out DATABASE_URL=$base/$db cargo test --no-run --quiet \
  || { echo "sesame: compiling against $base/$db failed" >&2; exit 1; }

if [ "${1:-}" = "--check" ]; then
  if ! diff -r .sqlx "$out" >/dev/null 2>&1; then
    diff -r .sqlx "$out" | head -n 20 >&2 || true
    echo "sesame: .sqlx/ is stale: run scripts/sqlx-prepare.sh and commit .sqlx/" >&2
    rm -rf "$out"; exit 1
  fi
  rm -rf "$out"; echo ".sqlx/ is current"
else
  echo "wrote $(ls .sqlx | wc -l) query files to .sqlx/"
fi
