#!/bin/bash
# Import hook: replace the template's database with the pg_dump archive on
# stdin (what export.sh writes). The archive is restored into a new database
# first, every object owned by the template's role (--no-owner --role), and
# only when that succeeded is it swapped in for the old one, which is then
# dropped: a broken stream leaves the database as it was. Importing the
# same stream twice gives the same database. Diagnostics on stderr.
set -euo pipefail

db="${TPL_DB_NAME}"
role="${TPL_DB_USER}"
# <name>__import_<random>: at most 63 characters, like every PostgreSQL name.
prefix="${db:0:40}__"
suffix="$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
staging="${prefix}import_${suffix}"
replaced="${prefix}replaced_${suffix}"

cd /  # runuser keeps the working directory, which postgres may not enter
psql_admin() {
    runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d postgres "$@"
}
drop_leftovers() {
    # Databases of imports that were interrupted (this one's too, on failure).
    psql_admin -v prefix="${prefix}" <<'SQL'
SELECT format('DROP DATABASE %I WITH (FORCE)', datname) FROM pg_database
 WHERE starts_with(datname, :'prefix' || 'import_')
    OR starts_with(datname, :'prefix' || 'replaced_') \gexec
SQL
}
trap 'drop_leftovers || true' EXIT
trap 'exit 143' TERM INT

drop_leftovers
echo "==> restoring into a new database ${staging}" >&2
psql_admin -v staging="${staging}" -v role="${role}" <<'SQL'
CREATE DATABASE :"staging" OWNER :"role" TEMPLATE template0;
SQL
runuser -u postgres -- pg_restore --no-password --exit-on-error --no-owner --no-privileges \
    --role="${role}" --dbname="${staging}"
runuser -u postgres -- vacuumdb --quiet --analyze-only --dbname="${staging}"

echo "==> replacing database ${db}" >&2
# Closed to new sessions, its sessions ended, renamed away; then the new one
# takes its name. If that fails the old database is opened again.
if ! psql_admin -v db="${db}" -v staging="${staging}" -v replaced="${replaced}" <<'SQL'
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') AS had_db \gset
\if :had_db
ALTER DATABASE :"db" WITH ALLOW_CONNECTIONS false;
SELECT count(pg_terminate_backend(pid, 10000)) AS disconnected FROM pg_stat_activity
 WHERE datname = :'db' AND pid <> pg_backend_pid() \gset
ALTER DATABASE :"db" RENAME TO :"replaced";
\endif
ALTER DATABASE :"staging" RENAME TO :"db";
SQL
then
    psql_admin -v db="${db}" -v replaced="${replaced}" <<'SQL' || true
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'replaced') AS renamed \gset
\if :renamed
ALTER DATABASE :"replaced" RENAME TO :"db";
\endif
ALTER DATABASE :"db" WITH ALLOW_CONNECTIONS true;
SQL
    echo "replacing database ${db} failed; it is left as it was" >&2
    exit 1
fi
drop_leftovers
echo "==> database ${db} replaced" >&2
