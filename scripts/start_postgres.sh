#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster for tests and print its URL on stdout:
#
#   url=$(scripts/start_postgres.sh)            # e.g. postgresql+psycopg://rlhfkit:...@127.0.0.1:54873/rlhfkit
#   RLHFKIT_TEST_POSTGRES_URL=$url RLHFKIT_REQUIRE_POSTGRES=1 .venv/bin/pytest tests/feedback/test_postgres.py
#   scripts/stop_postgres.sh "$url"              # stop it and delete its files
#
# The cluster lives in a fresh temp dir (mktemp -d, or under $RLHFKIT_PG_ROOT), listens on
# 127.0.0.1 only, on a free port, with a random password (scram-sha-256). It is built for
# speed, not safety (fsync off): never keep data in it. PostgreSQL refuses to run as root,
# so as root the server runs as the `postgres` user (runuser); when the server binaries
# are missing and we are root, `apt-get install postgresql` installs them first.
# Everything but the URL goes to stderr. PG_BIN=/path/to/bin picks the binaries.
set -euo pipefail

log() { echo "start_postgres: $*" >&2; }

find_bin() {
  if [[ -n "${PG_BIN:-}" ]]; then echo "$PG_BIN"; return; fi
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -z "$dir" ]] && command -v pg_ctl >/dev/null 2>&1; then dir=$(dirname "$(command -v pg_ctl)"); fi
  echo "$dir"
}

bin=$(find_bin)
if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
  if [[ $(id -u) -eq 0 ]]; then
    log "PostgreSQL server binaries not found; installing the postgresql package"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2
    bin=$(find_bin)
  fi
  if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
    log "no PostgreSQL server binaries (initdb, pg_ctl); install the postgresql package or set PG_BIN"
    exit 1
  fi
fi

python=$(command -v python3 || command -v python)
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
password=$("$python" -c 'import secrets; print(secrets.token_hex(16))')
root=$(mktemp -d "${RLHFKIT_PG_ROOT:-${TMPDIR:-/tmp}}/rlhfkit-pg.XXXXXX")
chmod 755 "$root"

as_owner() { "$@"; }
if [[ $(id -u) -eq 0 ]]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir "$root" --shell /usr/sbin/nologin postgres
  chown postgres: "$root"
  as_owner() { runuser -u postgres -- "$@"; }
fi

printf '%s\n' "$password" > "$root/pwfile"
[[ $(id -u) -eq 0 ]] && chown postgres: "$root/pwfile"
chmod 600 "$root/pwfile"
as_owner "$bin/initdb" -D "$root/data" -U rlhfkit --pwfile="$root/pwfile" -A scram-sha-256 -E UTF8 \
  --locale=C.UTF-8 >"$root/initdb.log" 2>&1 || as_owner "$bin/initdb" -D "$root/data" -U rlhfkit \
  --pwfile="$root/pwfile" -A scram-sha-256 -E UTF8 --locale=C >"$root/initdb.log" 2>&1 || {
    log "initdb failed:"; cat "$root/initdb.log" >&2; exit 1; }
rm -f "$root/pwfile"
as_owner "$bin/pg_ctl" -D "$root/data" -l "$root/server.log" -w -t 60 start \
  -o "-p $port -k $root -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  >&2 || { log "the server did not start:"; cat "$root/server.log" >&2; exit 1; }
PGPASSWORD=$password "$bin/createdb" -h 127.0.0.1 -p "$port" -U rlhfkit rlhfkit >&2

url="postgresql+psycopg://rlhfkit:$password@127.0.0.1:$port/rlhfkit"
printf '%s\n' "$url" > "$root/url"
[[ $(id -u) -eq 0 ]] && chown postgres: "$root/url"
chmod 600 "$root/url"
printf '%s\n' "$bin" > "$root/bin"
log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') running in $root on port $port; stop it with: scripts/stop_postgres.sh $root"
echo "$url"
