#!/bin/bash
# Create the role and the database if missing, and (re)set the role's
# password. Safe to re-run. The password travels in the environment, never on
# a command line.
set -euo pipefail

echo "==> role ${TPL_DB_USER} and database ${TPL_DB_NAME}"
cd /
runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 \
    -v db_user="${TPL_DB_USER}" -v db_name="${TPL_DB_NAME}" <<'SQL'
\getenv db_password TPL_DB_PASSWORD
SELECT format('CREATE ROLE %I LOGIN', :'db_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'db_user') \gexec
ALTER ROLE :"db_user" WITH LOGIN PASSWORD :'db_password';
SELECT format('CREATE DATABASE %I OWNER %I', :'db_name', :'db_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db_name') \gexec
ALTER DATABASE :"db_name" OWNER TO :"db_user";
SQL
echo "==> role and database are in place"
