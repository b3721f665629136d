#!/bin/bash
# Export hook: the template's database as one pg_dump archive (custom
# format, compressed) on stdout, dumped by the postgres superuser so that
# every object of the database is in it. Only the archive goes to stdout;
# diagnostics go to stderr.
set -euo pipefail

cd /  # runuser keeps the working directory, which postgres may not enter
echo "==> pg_dump of database ${TPL_DB_NAME}" >&2
runuser -u postgres -- pg_dump --format=custom --no-password --dbname="${TPL_DB_NAME}"
echo "==> pg_dump finished" >&2
