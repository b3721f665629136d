#!/bin/bash
# Clone hook: a clone has its own address and a new database password
# (db_password is regenerated; the deploy phase wrote it into WordPress's
# configuration). Set the password in MariaDB, give the clone new keys and
# salts (the source's logins end here) and its own TLS certificate, replace
# the source's URLs by the clone's (the rewrite hook), restart php-fpm and
# reload nginx, then check the site as a client would. The password reaches
# mariadb on stdin and in MYSQL_PWD, never on a command line.
set -euo pipefail

cd /
# A clone is a copy of a running server: at its first start MariaDB
# recovers its InnoDB log, which takes a while after heavy writes.
for attempt in $(seq 1 600); do
    if mariadb-admin --silent ping >/dev/null 2>&1; then
        break
    fi
    if [[ ${attempt} -eq 1 ]]; then
        echo "==> waiting for MariaDB (recovering the copy)" >&2
    fi
    if [[ ${attempt} -eq 600 ]]; then
        echo "MariaDB did not become ready within 600 s" >&2
        exit 1
    fi
    sleep 1
done

echo "==> new password of ${TPL_DB_USER}@localhost" >&2
printf "ALTER USER '%s'@'localhost' IDENTIFIED BY '%s';\n" "${TPL_DB_USER}" "${TPL_DB_PASSWORD}" \
    | mariadb --batch
result="$(MYSQL_PWD="${TPL_DB_PASSWORD}" mariadb --batch --skip-column-names \
    --user="${TPL_DB_USER}" --database="${TPL_DB_NAME}" --execute="SELECT DATABASE()")"
if [[ "${result}" != "${TPL_DB_NAME}" ]]; then
    echo "${TPL_DB_USER} cannot log in with the new password" >&2
    exit 1
fi

echo "==> new authentication keys and salts" >&2
(
    umask 027
    php /usr/local/lib/wp-provisioner/salts.php >/etc/wordpress/salts.php.new
)
chown root:www-data /etc/wordpress/salts.php.new
mv -f /etc/wordpress/salts.php.new /etc/wordpress/salts.php

WP_TLS_RENEW=yes bash /var/lib/lxc-provisioner/scripts/20-tls.sh >&2
bash /var/lib/lxc-provisioner/hooks/rewrite.sh

version="$(ls /etc/php | sort -V | tail -n 1)"
echo "==> restarting php${version}-fpm, reloading nginx" >&2
systemctl restart "php${version}-fpm"
systemctl reload nginx
bash /var/lib/lxc-provisioner/scripts/50-verify.sh >&2
