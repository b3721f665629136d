#!/bin/bash
# Import hook: replace the site's data with the tar stream on stdin (what
# export.sh writes). The stream is unpacked beside the live data and the dump
# loaded into a new database (<db>__import); only when both worked are they
# swapped in: every table at once in one RENAME TABLE (the old ones to
# <db>__replaced, dropped afterwards), then the uploads directory. A broken
# stream leaves the site as it was; the same stream twice gives the same
# site. The site's URLs are still the peer's: the rewrite hook follows.
# Diagnostics on stderr.
set -euo pipefail

cd /
db="${TPL_DB_NAME}"
staging="${db}__import"
replaced="${db}__replaced"
content=/var/lib/wordpress/wp-content
parent=/var/lib/wordpress

drop_leftovers() {
    mariadb --batch --execute="DROP DATABASE IF EXISTS \`${staging}\`; DROP DATABASE IF EXISTS \`${replaced}\`"
    rm -rf "${parent}"/.import-*
}
trap 'drop_leftovers || true' EXIT
trap 'exit 143' TERM INT

drop_leftovers
work="$(mktemp -d "${parent}/.import-XXXXXX")"
tar -C "${work}" --numeric-owner -xf -
if [[ ! -f "${work}/database.sql" ]]; then
    echo "the stream holds no database.sql" >&2
    exit 1
fi
if [[ "$(tail -n 1 "${work}/database.sql")" != "-- Dump completed"* ]]; then
    echo "the stream's database.sql is not a whole mysqldump" >&2
    exit 1
fi
mkdir -p "${work}/uploads"
echo "==> loading the dump into a new database ${staging}" >&2
mariadb --batch --execute="CREATE DATABASE \`${staging}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
mariadb --batch --database="${staging}" <"${work}/database.sql"

tables() {
    mariadb --batch --skip-column-names --execute="SELECT table_name FROM information_schema.tables
        WHERE table_schema = '$1' ORDER BY table_name"
}
renames=()
for table in $(tables "${db}"); do
    renames+=("\`${db}\`.\`${table}\` TO \`${replaced}\`.\`${table}\`")
done
count=0
for table in $(tables "${staging}"); do
    renames+=("\`${staging}\`.\`${table}\` TO \`${db}\`.\`${table}\`")
    count=$((count + 1))
done
if [[ ${count} -eq 0 ]]; then
    echo "the dump holds no table" >&2
    exit 1
fi
echo "==> replacing the ${count} tables of ${db}" >&2
mariadb --batch --execute="CREATE DATABASE IF NOT EXISTS \`${db}\`; CREATE DATABASE \`${replaced}\`;
    RENAME TABLE $(IFS=,; echo "${renames[*]}")"

echo "==> replacing the uploads ($(find "${work}/uploads" -type f | wc -l) files)" >&2
chown -R www-data:www-data "${work}/uploads"
chmod 0755 "${work}/uploads"
if [[ -e "${content}/uploads" ]]; then
    mv -T "${content}/uploads" "${work}/uploads.replaced"
fi
mv -T "${work}/uploads" "${content}/uploads"
echo "==> the site's data is replaced" >&2
