#!/usr/bin/env bash
# Stop a cluster started by scripts/start_postgres.sh and delete its files.
#
#   scripts/stop_postgres.sh DIR        # the directory start_postgres.sh reported
#   scripts/stop_postgres.sh URL        # or the URL it printed (found by its port)
set -euo pipefail

target=${1:?usage: scripts/stop_postgres.sh DIR-or-URL}
root=""
if [[ -d "$target" ]]; then
  root=$target
else
  port=$(sed -E 's|.*@[^:/]+:([0-9]+)/.*|\1|' <<<"$target")
  for dir in "${RLHFKIT_PG_ROOT:-${TMPDIR:-/tmp}}"/rlhfkit-pg.*; do
    if [[ -f "$dir/url" ]] && grep -q "@127.0.0.1:$port/" "$dir/url"; then root=$dir; break; fi
  done
fi
if [[ -z "$root" || ! -f "$root/bin" || ! -d "$root/data" ]]; then
  echo "stop_postgres: $target is not a cluster started by start_postgres.sh" >&2
  exit 1
fi
bin=$(cat "$root/bin")
if [[ $(id -u) -eq 0 ]]; then
  runuser -u postgres -- "$bin/pg_ctl" -D "$root/data" -m fast -w stop >&2 || true
else
  "$bin/pg_ctl" -D "$root/data" -m fast -w stop >&2 || true
fi
rm -rf "$root"
echo "stop_postgres: stopped and removed $root" >&2
