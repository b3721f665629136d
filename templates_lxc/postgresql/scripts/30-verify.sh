#!/bin/bash
# Log in over TCP on the container's address as the application role, the way
# a client on the network would.
set -euo pipefail

address="$(ip -4 -o addr show dev eth0 scope global | awk '{split($4, a, "/"); print a[1]; exit}')"
echo "==> connecting to ${TPL_DB_NAME} on ${address}:5432 as ${TPL_DB_USER}"
result="$(PGPASSWORD="${TPL_DB_PASSWORD}" psql -X -At -v ON_ERROR_STOP=1 \
    -h "${address}" -U "${TPL_DB_USER}" -d "${TPL_DB_NAME}" \
    -c "SELECT current_user || '@' || current_database()")"
if [[ "${result}" != "${TPL_DB_USER}@${TPL_DB_NAME}" ]]; then
    echo "unexpected answer from PostgreSQL: ${result}" >&2
    exit 1
fi
echo "==> psql over TCP works (${result})"
