#!/usr/bin/env bash
# Run a command (the test suite) with the services the tests need, then stop them:
#
#   scripts/with_test_services.sh .venv/bin/python -m pytest      # what `make test` runs
#
# - Debian's Chromium for the browser tests (tests/feedback/test_browser.py, Playwright):
#   installed with apt when missing and we are root; RLHFKIT_REQUIRE_BROWSER=1 makes a
#   missing browser a test failure instead of a skip.
# - A throwaway PostgreSQL server (scripts/start_postgres.sh) for the store's PostgreSQL tests:
#   RLHFKIT_TEST_POSTGRES_URL points at it and RLHFKIT_REQUIRE_POSTGRES=1 makes its absence fail.
# SERVICES=0 skips both (the browser and PostgreSQL tests then skip, saying why).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ "${SERVICES:-1}" == 0 ]]; then exec "$@"; fi

if [[ ! -x /usr/bin/chromium ]]; then
  if [[ $(id -u) -eq 0 ]]; then
    echo "with_test_services: installing Debian's chromium for the browser tests" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >&2
  else
    echo "with_test_services: /usr/bin/chromium is missing and we are not root: install the 'chromium'" \
         "package (sudo apt-get install chromium) or run with SERVICES=0" >&2
    exit 1
  fi
fi

url=$(scripts/start_postgres.sh)
cleanup() { scripts/stop_postgres.sh "$url" >&2 || true; }
trap cleanup EXIT INT TERM
export RLHFKIT_TEST_POSTGRES_URL="$url" RLHFKIT_REQUIRE_POSTGRES=1 RLHFKIT_REQUIRE_BROWSER=1
"$@"
