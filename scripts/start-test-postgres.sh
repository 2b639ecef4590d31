#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the test suite and print its SQLAlchemy URL on stdout.
#
#   export C2SEG_TEST_POSTGRES_URL="$(scripts/start-test-postgres.sh)"   # start (installs postgresql if missing)
#   scripts/start-test-postgres.sh stop                                  # stop it and delete its files
#
# Listens on 127.0.0.1 only, trust authentication, fsync off: for tests, never for real data.
# Settings: C2SEG_PG_DIR (default /tmp/c2seg-test-pg), C2SEG_PG_PORT (default 54329),
# C2SEG_PG_NO_INSTALL=1 to fail instead of running apt-get when PostgreSQL is missing.
# Everything but the URL goes to stderr.
set -euo pipefail
PGDIR=${C2SEG_PG_DIR:-/tmp/c2seg-test-pg}
PGPORT=${C2SEG_PG_PORT:-54329}

find_bin() {
    local d
    for d in "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")" /usr/lib/postgresql/*/bin; do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
    done
    return 1
}

if ! BIN=$(find_bin); then
    if [ "${C2SEG_PG_NO_INSTALL:-0}" = 1 ]; then echo "PostgreSQL (initdb) not found" >&2; exit 3; fi
    echo "installing postgresql from Debian's packages..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
    BIN=$(find_bin)
fi

# PostgreSQL refuses to run as root: run it as the `postgres` user (created if needed).
RUN=()
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    RUN=(runuser -u postgres --)
fi

if [ "${1:-start}" = stop ]; then
    if [ -d "$PGDIR/data" ]; then "${RUN[@]}" "$BIN/pg_ctl" -D "$PGDIR/data" -m immediate -w stop >&2 || true; fi
    rm -rf "$PGDIR"
    exit 0
fi

URL="postgresql+psycopg://postgres@127.0.0.1:$PGPORT/postgres"
if [ -d "$PGDIR/data" ] && "${RUN[@]}" "$BIN/pg_ctl" -D "$PGDIR/data" status >/dev/null 2>&1; then
    echo "$URL"   # already running
    exit 0
fi
rm -rf "$PGDIR"
mkdir -p "$PGDIR"
chmod 700 "$PGDIR"
if [ "$(id -u)" = 0 ]; then chown postgres "$PGDIR"; fi
"${RUN[@]}" "$BIN/initdb" -D "$PGDIR/data" -A trust -U postgres -E UTF8 --no-sync >"$PGDIR/initdb.log" 2>&1 \
    || { cat "$PGDIR/initdb.log" >&2; exit 1; }
"${RUN[@]}" "$BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGDIR -c fsync=off -c full_page_writes=off -c max_connections=200" \
    start >&2 || { cat "$PGDIR/server.log" >&2; exit 1; }
echo "$URL"
