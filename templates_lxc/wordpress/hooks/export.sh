#!/bin/bash
# Export hook: the site's data as one tar stream on stdout: database.sql, a
# mysqldump of the site's database (one consistent snapshot:
# --single-transaction), and uploads/, the media under wp-content. Only the
# tar goes to stdout; diagnostics go to stderr.
set -euo pipefail

cd /
content=/var/lib/wordpress/wp-content
work="$(mktemp -d /var/tmp/wp-export-XXXXXX)"
trap 'rm -rf "${work}"' EXIT
trap 'exit 143' TERM INT

echo "==> mysqldump of database ${TPL_DB_NAME}" >&2
mysqldump --single-transaction --quick --no-tablespaces --hex-blob \
    --default-character-set=utf8mb4 "${TPL_DB_NAME}" >"${work}/database.sql"
if [[ "$(tail -n 1 "${work}/database.sql")" != "-- Dump completed"* ]]; then
    echo "mysqldump did not finish its dump" >&2
    exit 1
fi
install -d -o www-data -g www-data -m 0755 "${content}/uploads"
echo "==> archiving the dump ($(stat -c %s "${work}/database.sql") bytes) and" \
    "$(find "${content}/uploads" -type f | wc -l) uploaded files" >&2
tar --numeric-owner -cf - -C "${work}" database.sql -C "${content}" uploads
