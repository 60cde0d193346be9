# Shared by the bench scripts that source it (after `cd` to the repository's root and
# setting PG_BASE): the binaries to measure, ports, psql, and the processes and database to
# clean up on exit.
#   PIDS+=("$!")        a background process to stop on exit
#   db=NAME             a database to drop on exit (when set)
#   work=DIR            a temporary folder to delete on exit (when set)

# free_port: a free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# psql_ ARGS...: psql against PG_BASE's `postgres` database, quiet, unaligned, stopping on errors.
psql_() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$PG_BASE/postgres" "$@"; }
# pg_setting NAME: the server's value of a setting.
pg_setting() { psql_ -c "SHOW $1"; }

# release_bins NAME...: for each of sesame, loadgen and floor named, the binary in SESAME_BIN,
# LOADGEN_BIN or FLOOR_BIN when set, else this checkout's release build of it (built now, and
# the variable set). Also sets `measured`: which sesame runs, a binary or the commit.
release_bins() {
  local target=${CARGO_TARGET_DIR:-target} name
  for name in "$@"; do
    case $name in
      sesame)
        if [ -n "${SESAME_BIN:-}" ]; then
          measured="binary $SESAME_BIN"
        else
          SESAME_BIN=$target/release/sesame
          measured="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+changes')"
          cargo build --release --locked --quiet --bin sesame
        fi ;;
      loadgen)
        [ -n "${LOADGEN_BIN:-}" ] || { LOADGEN_BIN=$target/release/examples/loadgen; cargo build --release --locked --quiet --example loadgen; } ;;
      floor)
        [ -n "${FLOOR_BIN:-}" ] || { FLOOR_BIN=$target/release/examples/floor; cargo build --release --locked --quiet --example floor; } ;;
      *) echo "release_bins: sesame, loadgen or floor, not $name" >&2; return 2 ;;
    esac
  done
}

PIDS=()
bench_cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -z "${db:-}" ] || psql_ -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  [ -z "${work:-}" ] || rm -rf "$work"
}
trap bench_cleanup EXIT

# seed_db DB SCALE SESAME_BIN: database DB made anew, migrated by SESAME_BIN and filled by
# `bench/seed --scale SCALE`; prints the seed's facts (its first line is what it holds).
# With SEED_FROM=NAME in the environment (a database that bench/seed filled earlier, with no
# session open on it), DB is a file copy of NAME instead, brought to this checkout's
# migrations, and SCALE is not used: a scale-1 seed takes most of an hour, its copy minutes.
seed_db() {
  local name=$1 scale=$2 bin=$3 url=$PG_BASE/$1 counts
  psql -X -q -v ON_ERROR_STOP=1 -d "$PG_BASE/postgres" -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null
  if [ -n "${SEED_FROM:-}" ]; then
    psql -X -q -v ON_ERROR_STOP=1 -d "$PG_BASE/postgres" \
      -c "CREATE DATABASE $name TEMPLATE $SEED_FROM STRATEGY FILE_COPY" >/dev/null
    env -i PATH="$PATH" HOME="$HOME" DATABASE_URL="$url" RUST_LOG=warn "$bin" migrate >/dev/null
    counts=$(psql -X -q -At -v ON_ERROR_STOP=1 -d "$url" -c "SELECT format(
        'users=%s sessions=%s tokens=%s events=%s',
        (SELECT count(*) FROM users), (SELECT count(*) FROM sessions),
        (SELECT count(*) FROM refresh_tokens), (SELECT count(*) FROM audit_events))")
    echo "seed: a copy of database $SEED_FROM (filled by bench/seed): $counts"
  else
    psql -X -q -v ON_ERROR_STOP=1 -d "$PG_BASE/postgres" -c "CREATE DATABASE $name" >/dev/null
    env -i PATH="$PATH" HOME="$HOME" DATABASE_URL="$url" RUST_LOG=warn "$bin" migrate >/dev/null
    bench/seed --scale "$scale" "$url"
  fi
}

# settle_seeded DB SESAME_BIN: what a deployment that has run all year would have done to a seeded
# database: its cleanup job has deleted the expired and ended rows and counted the hours (else
# the job's first run does it during the measurements); then vacuum and checkpoint, so the runs
# start from a settled database. Prints the cleanup's report.
settle_seeded() {
  env -i PATH="$PATH" HOME="$HOME" DATABASE_URL="$PG_BASE/$1" RUST_LOG=warn "$2" cleanup
  psql -X -q -d "$PG_BASE/$1" -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
  sync
}
