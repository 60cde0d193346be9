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
work=$(mktemp -d)
finish() {
  local rc=$?
  rm -rf "$work"
  # A step before the counted part (formatting, .sqlx/, clippy, tools) stopped the run.
  if [ "$rc" -ne 0 ] && [ -z "${summarised:-}" ]; then echo "sesame: FAILED (exit $rc, see above)" >&2; fi
}
trap finish EXIT

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

# --- The counted part: every result below goes into the closing line. -----------
passed=0
failed=0
# fail WHAT: one failure that printed no count of its own (a build error, a missing suite).
fail() {
  echo "sesame: FAILED: $*" >&2
  failed=$((failed + 1))
}
# count WORD FILE: the sum of the numbers just before WORD (e.g. "passed" in "12 passed;")
# on the lines of FILE that start with "test result: ".
count() {
  awk -v w="$1" '/^test result: / { for (i = 2; i <= NF; i++) if (index($i, w) == 1) n += $(i - 1) } END { print n + 0 }' "$2"
}
# count_cargo LOG RC [WHAT]: adds the passed and failed counts of every "test result:" line.
count_cargo() {
  local p f
  p=$(count passed "$1")
  f=$(count failed "$1")
  passed=$((passed + p))
  failed=$((failed + f))
  if [ "$2" -ne 0 ] && [ "$f" -eq 0 ]; then fail "${3:-cargo test} exited $2 with no failed test (a build error?)"; fi
}
# count_fuzz LOG RC: the "Test cases:" summaries of schemathesis (one per run: the public
# and the admin document), each the line after "Test cases:":
# "N generated, N passed" or "N generated, K found U unique failures[, E errored][, S skipped]".
count_fuzz() {
  local line g p k u e runs=0 bad=0
  # before WORD: the number before the first word starting with WORD on the line, or 0.
  before() { awk -v w="$1" '{ for (i = 2; i <= NF; i++) if (index($i, w) == 1) { n = $(i - 1) + 0; break } } END { print n + 0 }' <<<"$line"; }
  while IFS= read -r line; do
    runs=$((runs + 1))
    g=$(before generated) p=$(before passed) k=$(before found) u=$(before unique) e=$(before errored)
    if [[ $line == *" passed"* ]]; then
      passed=$((passed + p))
    else
      passed=$((passed + g - k - e))
    fi
    failed=$((failed + u + e))
    bad=$((bad + u + e))
    if [ "${g:-0}" -eq 0 ]; then fail "scripts/fuzz.sh: a run generated no test case"; fi
  done < <(awk '/^Test cases:/ { getline; print }' "$1")
  if [ "$2" -ne 0 ] && [ "$bad" -eq 0 ]; then fail "scripts/fuzz.sh exited $2"; fi
  if [ "$runs" -ne 2 ]; then fail "scripts/fuzz.sh: expected 2 runs (public and admin document), saw $runs"; fi
}
# count_suite NAME LOG RC: each suite prints "<check>: ok" per passing check and
# "<check>: FAILED..." per failing one; a suite that exits 0 must have passed something.
count_suite() {
  local p f
  p=$(grep -cE '^[a-z][a-z0-9 ]*: ok( |$)' "$2" || true)
  f=$(grep -cE '^[a-z][a-z0-9 ]*: FAILED' "$2" || true)
  passed=$((passed + p))
  failed=$((failed + f))
  if [ "$3" -ne 0 ] && [ "$f" -eq 0 ]; then fail "$1 exited $3"; fi
  if [ "$3" -eq 0 ] && [ "$p" -eq 0 ]; then fail "$1 exited 0 but reported no passing check"; fi
}

step "tests"
rc=0
# --no-fail-fast: a failure in one test binary still lets the others run and be counted.
cargo test --locked --no-fail-fast "$@" 2>&1 | tee "$work/cargo.log" || rc=$?
count_cargo "$work/cargo.log" "$rc"
# Whatever follows runs the binary that build produced; a build that did not finish has none.
built=1
grep -q '^test result: ' "$work/cargo.log" || built=0

if [ "$everything" = 1 ] && [ "$built" = 0 ]; then
  fail "the Rust tests did not build: the jose test, the fuzzing and the outside-in suites did not run"
elif [ "$everything" = 1 ]; then
  # Ignored under plain `cargo test` (it needs Node); run here, so it never goes unrun.
  step "tokens verified by an independent JWT library (jose, tests/jwks)"
  rc=0
  cargo test --locked --test api "$JOSE_TEST" -- --ignored --exact 2>&1 | tee "$work/jose.log" || rc=$?
  count_cargo "$work/jose.log" "$rc" "the jose test"
  # Fail closed: a renamed test would otherwise match nothing and "pass".
  grep -qE '^test result: .* (1 passed|1 failed)' "$work/jose.log" || fail "$JOSE_TEST did not run"

  step "API fuzzing (schemathesis against the running server)"
  rc=0
  scripts/fuzz.sh 2>&1 | tee "$work/fuzz.log" || rc=$?
  count_fuzz "$work/fuzz.log" "$rc"

  # Suites that use sesame from outside, as its users do: generated clients,
  # browsers, deployment configs. Run with bash: a lost exec bit cannot skip one.
  for suite in tests/clients tests/browser tests/deploy; do
    step "$suite"
    if [ ! -f "$suite/run.sh" ]; then
      fail "$suite/run.sh is missing"
      continue
    fi
    rc=0
    SESAME_BIN=$(realpath "${CARGO_TARGET_DIR:-target}/debug/sesame") PG_BASE=${DATABASE_URL%/*} \
      bash "$suite/run.sh" 2>&1 | tee "$work/suite.log" || rc=$?
    count_suite "$suite" "$work/suite.log" "$rc"
  done
fi

# One plain closing line for people and CI, and the exit status that matches it.
summarised=1
echo
echo "sesame: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
