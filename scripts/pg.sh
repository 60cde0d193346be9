#!/usr/bin/env bash
# A private PostgreSQL cluster for this checkout: its own data folder, port and
# socket directory, reused across runs. Used by scripts/dev.sh and scripts/test.sh.
#
#   scripts/pg.sh start            start (or reuse) the cluster; prints its base URL
#   scripts/pg.sh ensure-db NAME   create database NAME if missing
#   scripts/pg.sh stop             stop the cluster (data is kept)
#   scripts/pg.sh psql DB ARGS...  run psql against database DB
#   scripts/pg.sh destroy          stop it and delete its data
#   scripts/pg.sh status           say whether it runs, and where
#
# Settings: PG_BIN (folder with initdb/pg_ctl), PGPORT (default derived from the
# checkout path), SESAME_PGROOT (cluster folder). PostgreSQL refuses to run as
# root, so as root the cluster runs as the `postgres` user, in a folder under the
# system temp directory that user can reach.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cmd=${1:-start}

die() { echo "sesame: $*" >&2; exit 1; }

find_pg_bin() {
  local d
  if [ -n "${PG_BIN:-}" ]; then
    [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] && { echo "$PG_BIN"; return; }
    return 1
  fi
  if command -v pg_config >/dev/null 2>&1; then
    d=$(pg_config --bindir 2>/dev/null || true)
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return; fi
  fi
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return; fi
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"; return
  fi
  return 1
}

PG_BIN=$(find_pg_bin) || die "PostgreSQL not found (no initdb/pg_ctl in PG_BIN, pg_config --bindir, /usr/lib/postgresql/*/bin or PATH). Install it (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql@15) or set DATABASE_URL to an existing database."

hash=$(printf '%s' "$repo" | cksum | cut -d' ' -f1)
PGPORT=${PGPORT:-$((55000 + hash % 1000))}

if [ "$(id -u)" -eq 0 ]; then
  pg_user=postgres
  id -u "$pg_user" >/dev/null 2>&1 || die "running as root needs an unprivileged 'postgres' user to own the cluster (useradd --system postgres), or run as a normal user, or set DATABASE_URL."
  RUN=(runuser -u "$pg_user" --)
  # /root and most checkouts are not reachable by 'postgres': use the temp dir.
  PGROOT=${SESAME_PGROOT:-${TMPDIR:-/tmp}/sesame-pg-$hash}
else
  pg_user=$(id -un)
  RUN=()
  PGROOT=${SESAME_PGROOT:-$repo/.pgdata}
  # A unix socket path must stay under ~107 bytes.
  if [ ${#PGROOT} -gt 80 ]; then PGROOT=${TMPDIR:-/tmp}/sesame-pg-$(id -u)-$hash; fi
fi
DATA=$PGROOT/data
URL="postgres://postgres@127.0.0.1:$PGPORT"

running() { [ -f "$DATA/PG_VERSION" ] && "${RUN[@]}" "$PG_BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

psql_() { "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

case "$cmd" in
start)
  if ! running; then
    mkdir -p "$PGROOT"
    [ "$(id -u)" -eq 0 ] && chown "$pg_user" "$PGROOT" && chmod 700 "$PGROOT"
    if [ ! -f "$DATA/PG_VERSION" ]; then
      "${RUN[@]}" "$PG_BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync \
        >"$PGROOT/initdb.log" 2>&1 || { cat "$PGROOT/initdb.log" >&2; die "initdb failed (log above)"; }
    fi
    # A private throwaway cluster: durability settings traded for speed.
    "${RUN[@]}" "$PG_BIN/pg_ctl" -D "$DATA" -l "$PGROOT/server.log" -w -t 60 \
      -o "-p $PGPORT -k $PGROOT -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
      start >/dev/null || { tail -n 20 "$PGROOT/server.log" >&2; die "PostgreSQL did not start on port $PGPORT (log above; another server on that port? set PGPORT)"; }
  fi
  echo "$URL"
  ;;
ensure-db)
  name=${2:?usage: scripts/pg.sh ensure-db NAME}
  if [ "$(psql_ -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'")" != 1 ]; then
    psql_ -c "CREATE DATABASE \"$name\""
  fi
  ;;
stop)
  if running; then "${RUN[@]}" "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null; echo "stopped PostgreSQL on port $PGPORT"; else echo "not running"; fi
  ;;
psql)
  shift; db=${1:?usage: scripts/pg.sh psql DB [psql args]}; shift
  "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -d "$db" -v ON_ERROR_STOP=1 "$@"
  ;;
destroy)
  running && "${RUN[@]}" "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
  rm -rf "$PGROOT"; echo "removed $PGROOT"
  ;;
status)
  if running; then echo "running: $URL (data in $DATA)"; else echo "not running (data in $DATA)"; exit 3; fi
  ;;
*) die "usage: scripts/pg.sh start|ensure-db NAME|psql DB ARGS...|stop|destroy|status" ;;
esac
