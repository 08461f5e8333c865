#!/usr/bin/env bash
# Starts a throwaway PostgreSQL on 127.0.0.1:${PGPORT:-a free port} (trust auth, for tests only)
# and prints the admin URL to export as FACEWARDEN_TEST_PG_URL. Needs Debian's postgresql.
set -euo pipefail
if [ -z "${PGPORT:-}" ]; then
  PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
PGDATA=${PGDATA:-/tmp/facewarden-pg}
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
RUN_AS=()
if [ "$(id -u)" = 0 ]; then RUN_AS=(runuser -u postgres --); fi
if [ ! -f "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA" && [ "$(id -u)" != 0 ] || chown postgres "$PGDATA"
  "${RUN_AS[@]}" "$BIN/initdb" -D "$PGDATA" -A trust -U postgres >/dev/null
fi
if ! "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
  "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGDATA -c fsync=off" start >/dev/null \
    || { cat "$PGDATA/server.log" >&2; exit 1; }
else
  PGPORT=$(sed -n 4p "$PGDATA/postmaster.pid")  # already running: report its port
fi
echo "postgresql://postgres@127.0.0.1:$PGPORT/postgres"
