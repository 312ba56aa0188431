#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback, for the ledger tests and benchmarks.
#   bash scripts/postgres.sh start DIR   initdb into DIR (if new), start on 127.0.0.1, create
#                                        the database noiseforge_test; prints the URL
#   bash scripts/postgres.sh stop DIR    stop it (DIR stays; remove it to start afresh)
# Uses Debian's postgresql package (apt-get install postgresql). As root the server runs as
# the `postgres` user (initdb refuses root). Nothing listens beyond 127.0.0.1; local
# connections are trusted, so use it for tests only.
set -euo pipefail
cmd="${1:?usage: postgres.sh start|stop DIR}"
dir="${2:?usage: postgres.sh start|stop DIR}"
bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
[ -x "$bin/pg_ctl" ] || { echo "PostgreSQL binaries not found: apt-get install postgresql" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log"
    fi
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=100" start >/dev/null
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres noiseforge_test 2>/dev/null || true
    echo "postgresql://postgres@127.0.0.1:$port/noiseforge_test"
    ;;
  stop)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  *)
    echo "usage: postgres.sh start|stop DIR" >&2
    exit 2
    ;;
esac
