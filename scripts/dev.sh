#!/usr/bin/env bash
# README command 1: run sesame locally with development defaults.
#
#   scripts/dev.sh          start the private PostgreSQL (unless DATABASE_URL is
#                           set), apply migrations, serve on http://127.0.0.1:3001
#   scripts/dev.sh stop     stop the private PostgreSQL cluster
#
# Email goes to the console (codes and links are printed in the log).
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  stop) exec scripts/pg.sh stop ;;
  "") ;;
  *) echo "usage: scripts/dev.sh [stop]" >&2; exit 2 ;;
esac

command -v cargo >/dev/null || { echo "sesame: cargo not found; install Rust from rustup.rs" >&2; exit 1; }
if [ -z "${DATABASE_URL:-}" ] && ! grep -qs '^DATABASE_URL=' .env; then
  base=$(scripts/pg.sh start)
  scripts/pg.sh ensure-db sesame
  export DATABASE_URL=$base/sesame
  echo "sesame: PostgreSQL for this checkout at $DATABASE_URL (stop it with: scripts/dev.sh stop)" >&2
fi
export EMAIL_PROVIDER=${EMAIL_PROVIDER:-console}
# Build in the open (cargo's own progress), then run the binary: a silent first
# build of several minutes looks like a hang.
echo "sesame: building sesame (the first build takes several minutes)…" >&2
cargo build --locked --bin sesame
exec "${CARGO_TARGET_DIR:-target}/debug/sesame" serve
