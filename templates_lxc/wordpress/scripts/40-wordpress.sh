#!/bin/bash
# WordPress: its keys and salts (made once, here), the uploads directory,
# then the installation through WordPress's own functions with php-cli
# (files/lib/install.php: wp_install unless installed; the title and
# permalinks every time), then the site URL: a site whose URL changed (a
# resync with another site_host) has its old URLs replaced everywhere in the
# database (files/lib/rewrite.php, as the rewrite hook does). Safe to re-run.
set -euo pipefail

cd /
address="$(ip -4 -o addr show dev eth0 scope global | awk '{split($4, a, "/"); print a[1]; exit}')"
url="https://${TPL_SITE_HOST:-${address}}"

if [[ ! -s /etc/wordpress/salts.php ]]; then
    echo "==> new authentication keys and salts"
    umask 027
    php /usr/local/lib/wp-provisioner/salts.php >/etc/wordpress/salts.php.new
    chown root:www-data /etc/wordpress/salts.php.new
    mv -f /etc/wordpress/salts.php.new /etc/wordpress/salts.php
    umask 022
fi
install -d -o www-data -g www-data -m 0755 /var/lib/wordpress/wp-content/uploads

echo "==> WordPress at ${url}"
for step in install rewrite; do
    WP_SITE_URL="${url}" runuser -u www-data -- php -d display_errors=stderr \
        "/usr/local/lib/wp-provisioner/${step}.php"
done
