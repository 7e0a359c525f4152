#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the test suite (installed from Debian if absent).
# Prints the server URL. Idempotent: an already running server is reused.
set -euo pipefail
PORT=${IOLLM_PG_PORT:-54329}
DIR=${IOLLM_PG_DIR:-/tmp/iollm-pg-$PORT}

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
BIN=$(find_bin)
if [ -z "$BIN" ]; then
    apt-get install -y -q postgresql >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; }
    BIN=$(find_bin)
fi
id postgres >/dev/null 2>&1 || useradd --system --home-dir "$DIR" postgres

if ! "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
    mkdir -p "$DIR"
    chown postgres "$DIR"
    if [ ! -f "$DIR/PG_VERSION" ]; then
        runuser -u postgres -- "$BIN/initdb" -D "$DIR" -A trust -U postgres >/dev/null
    fi
    runuser -u postgres -- "$BIN/pg_ctl" -D "$DIR" -l "$DIR/server.log" -w start \
        -o "-p $PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$DIR -c max_connections=200" >/dev/null
fi
echo "postgresql://postgres@127.0.0.1:$PORT/postgres"
