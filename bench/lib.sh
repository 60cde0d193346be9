# Shared by the bench scripts that source it (after `cd` to the repository's root and
# setting PG_BASE): ports, psql, and the processes and database to clean up on exit.
#   PIDS+=("$!")        a background process to stop on exit
#   db=NAME             a database to drop on exit (when set)
#   work=DIR            a temporary folder to delete on exit (when set)

# free_port: a free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# psql_ ARGS...: psql against PG_BASE's `postgres` database, quiet, unaligned, stopping on errors.
psql_() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$PG_BASE/postgres" "$@"; }
# pg_setting NAME: the server's value of a setting.
pg_setting() { psql_ -c "SHOW $1"; }

PIDS=()
bench_cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -z "${db:-}" ] || psql_ -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  [ -z "${work:-}" ] || rm -rf "$work"
}
trap bench_cleanup EXIT
