#!/bin/sh
# The PostgreSQL server binaries (initdb, pg_ctl) that tests/fixtures/postgres.py starts throwaway clusters with.
# Found: nothing to do. Missing: Debian's postgresql package, through apt-install.sh.
set -eu
if [ -n "${ORCH_TEST_PG_BIN:-}" ]; then
    [ -x "$ORCH_TEST_PG_BIN/initdb" ] && exit 0
    echo "ORCH_TEST_PG_BIN=$ORCH_TEST_PG_BIN has no initdb" >&2
    exit 1
fi
for bindir in /usr/lib/postgresql/*/bin; do
    [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ] && exit 0
done
command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && exit 0
exec "$(dirname "$0")/apt-install.sh" postgresql
