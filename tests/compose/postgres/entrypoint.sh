#!/bin/bash
# Entry point of the local PostgreSQL image (Dockerfile beside this file). Like
# the official image's: on the first start it creates the cluster in $PGDATA
# with POSTGRES_USER as superuser (password POSTGRES_PASSWORD, required) and
# the database POSTGRES_DB (default: the user's name); later starts reuse it.
# Local connections are trusted, network ones need the password
# (scram-sha-256), and the server listens on every address. It runs as the
# postgres user, as PID 1, so `stop` reaches it directly. Not supported:
# /docker-entrypoint-initdb.d, POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD.
set -euo pipefail

if [ "${1:0:1}" = "-" ]; then
  set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
  exec "$@"
fi

export PGDATA=${PGDATA:-/var/lib/postgresql/data}
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}

if [ "$(id -u)" = 0 ]; then
  # a fresh volume is root's: hand it to postgres, then drop root for good
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 0700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "postgres entrypoint: POSTGRES_PASSWORD must be set for a new cluster" >&2
    exit 1
  fi
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  if [ "$db" != postgres ]; then
    # single-user mode: no socket is open, so no client (nor a health check)
    # can mistake this set-up step for the server being ready
    printf 'CREATE DATABASE "%s";\n' "${db//\"/\"\"}" |
      postgres --single -D "$PGDATA" postgres >/dev/null
  fi
  echo "postgres entrypoint: created the cluster (user $user, database $db)" >&2
fi

exec "$@"
