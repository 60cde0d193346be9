#!/usr/bin/env bash
# README command 2: every test, unit and integration, against a real PostgreSQL.
#
#   scripts/test.sh [cargo test arguments]          the full run (CI: .ci/run)
#   scripts/test.sh --quick [cargo test arguments]  the inner loop: formatting,
#                                                   clippy and the Rust tests only
#
# Without DATABASE_URL it starts (or reuses) this checkout's private cluster
# (scripts/pg.sh). The full run also checks that the committed sqlx offline data
# (.sqlx/) is complete and current, runs clippy with SESAME_LINT=1 (CI), runs
# the one Rust test that needs Node (jose verifying tokens, #[ignore]d under
# plain `cargo test`), fuzzes the API with schemathesis (scripts/fuzz.sh) and
# runs the outside-in suites (tests/clients, tests/browser, tests/deploy).
# --quick needs only Rust and PostgreSQL: no Node, Python, browser or fuzzing.
# Extra arguments go to `cargo test` (e.g. scripts/test.sh health) and skip the
# jose test, the fuzzing and the suites.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
if [ "${1:-}" = --quick ]; then
  quick=1
  shift
fi

command -v cargo >/dev/null || { echo "sesame: cargo not found; install Rust from rustup.rs" >&2; exit 1; }
if [ -z "${DATABASE_URL:-}" ]; then
  base=$(scripts/pg.sh start)
  export DATABASE_URL=$base/postgres
fi
step() { printf '\n== %s\n' "$*"; }

step "formatting"
cargo fmt --check

if [ "$quick" = 0 ]; then
  step "build with the committed offline query data only (no database)"
  touch src/lib.rs tests/api/main.rs
  SQLX_OFFLINE=true cargo test --locked --no-run

  step "the offline query data is current"
  scripts/sqlx-prepare.sh --check
fi

if [ "$quick" = 1 ] || [ "${SESAME_LINT:-0}" = 1 ]; then
  step "clippy"
  cargo clippy --locked --all-targets -- -D warnings
fi

# The one Rust test that needs Node (#[ignore]d, so plain `cargo test` runs without it).
JOSE_TEST=tokens::an_independent_jwt_library_verifies_tokens_against_the_jwks
# The full run without a test filter: the jose test, the fuzzing, the outside-in suites.
everything=0
if [ "$quick" = 0 ] && [ $# -eq 0 ]; then everything=1; fi

if [ "$everything" = 1 ]; then
  step "test tools (jose, to verify tokens as a resource server would)"
  command -v node >/dev/null || { echo "sesame: node not found; install Node.js 18+ (Debian: apt-get install nodejs npm)" >&2; exit 1; }
  if [ ! -f tests/jwks/node_modules/jose/package.json ]; then
    npm ci --prefix tests/jwks --no-audit --no-fund --loglevel=error
  fi
fi

step "tests"
results=$(mktemp)
trap 'rm -f "$results" "$results.jose"' EXIT
cargo test --locked "$@" 2>&1 | tee "$results"
if [ "$everything" = 1 ]; then
  # Ignored under plain `cargo test` (it needs Node); run here, so it never goes unrun.
  step "tokens verified by an independent JWT library (jose, tests/jwks)"
  cargo test --locked --test api "$JOSE_TEST" -- --ignored --exact 2>&1 | tee "$results.jose"
  # Fail closed: a renamed test would otherwise match nothing and "pass".
  grep -q '^test result: ok\. 1 passed' "$results.jose" || { echo "sesame: $JOSE_TEST did not run" >&2; exit 1; }
  cat "$results.jose" >>"$results"
fi
passed=$(grep -o '^test result: ok\. [0-9]* passed' "$results" | awk '{s += $4} END {print s + 0}')

if [ "$everything" = 1 ]; then
  step "API fuzzing (schemathesis against the running server)"
  scripts/fuzz.sh 2>&1 | tee -a "$results"
  fuzzed=$(grep -o '[0-9]* generated, [0-9]* passed' "$results" | tail -n 1 | awk '{print $3}')
  passed=$((passed + ${fuzzed:-0}))

  # Suites that use sesame from outside, as its users do: generated clients,
  # browsers, deployment configs. Each prints "<check>: ok" per passing check.
  for suite in tests/clients tests/browser tests/deploy; do
    [ -x "$suite/run.sh" ] || continue
    step "$suite"
    SESAME_BIN=$(realpath "${CARGO_TARGET_DIR:-target}/debug/sesame") PG_BASE=${DATABASE_URL%/*} "$suite/run.sh" 2>&1 | tee -a "$results"
  done
  checks=$(grep -cE '^[a-z][a-z0-9 ]*: ok( |$)' "$results" || true)
  passed=$((passed + checks))
fi
# One plain closing line for people and CI: every Rust test and fuzz case passed.
echo
echo "sesame: $passed passed, 0 failed"
