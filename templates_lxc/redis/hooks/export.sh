#!/bin/bash
# Export hook: the dataset as one RDB snapshot on stdout, the snapshot a
# replica would get (Redis forks; its own dump.rdb is left alone). Only the
# snapshot goes to stdout; diagnostics go to stderr. The password travels in
# REDISCLI_AUTH, never on a command line.
set -euo pipefail

export REDISCLI_AUTH="${TPL_REDIS_PASSWORD}"
work="$(mktemp -d /var/tmp/redis-export-XXXXXX)"
trap 'rm -rf "${work}"' EXIT

echo "==> taking an RDB snapshot" >&2
# To a file, not to '-': redis-cli 7.0 leaves the 40-byte end marker of a
# diskless transfer at the end of its standard output.
redis-cli --rdb "${work}/dump.rdb" >&2
redis-check-rdb "${work}/dump.rdb" >/dev/null
echo "==> snapshot of $(stat -c %s "${work}/dump.rdb") bytes" >&2
cat "${work}/dump.rdb"
