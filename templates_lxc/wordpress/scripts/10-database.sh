#!/bin/bash
# MariaDB (localhost only, as Debian configures it) with the site's database
# and its user, whose password is (re)set. Safe to re-run. The password
# reaches mariadb in the SQL on its stdin (printf is a shell builtin), never
# on a command line.
set -euo pipefail

cd /
echo "==> starting MariaDB"
systemctl enable --quiet mariadb
systemctl start mariadb
for attempt in $(seq 1 60); do
    if mariadb-admin --silent ping >/dev/null 2>&1; then
        break
    fi
    if [[ ${attempt} -eq 60 ]]; then
        echo "MariaDB did not become ready" >&2
        exit 1
    fi
    sleep 1
done

echo "==> database ${TPL_DB_NAME} and user ${TPL_DB_USER}@localhost"
{
    printf 'CREATE DATABASE IF NOT EXISTS `%s` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;\n' \
        "${TPL_DB_NAME}"
    printf "CREATE USER IF NOT EXISTS '%s'@'localhost';\n" "${TPL_DB_USER}"
    printf "ALTER USER '%s'@'localhost' IDENTIFIED BY '%s';\n" "${TPL_DB_USER}" "${TPL_DB_PASSWORD}"
    printf "GRANT ALL PRIVILEGES ON \`%s\`.* TO '%s'@'localhost';\n" "${TPL_DB_NAME}" "${TPL_DB_USER}"
} | mariadb --batch

result="$(MYSQL_PWD="${TPL_DB_PASSWORD}" mariadb --batch --skip-column-names \
    --user="${TPL_DB_USER}" --database="${TPL_DB_NAME}" --execute="SELECT DATABASE()")"
if [[ "${result}" != "${TPL_DB_NAME}" ]]; then
    echo "${TPL_DB_USER} cannot use ${TPL_DB_NAME}: ${result}" >&2
    exit 1
fi
echo "==> ${TPL_DB_USER} logs in with its password"
