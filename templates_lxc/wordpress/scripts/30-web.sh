#!/bin/bash
# php-fpm with the template's PHP settings, nginx with the WordPress site
# (HTTPS, HTTP redirected) instead of Debian's default one. Safe to re-run.
set -euo pipefail

version="$(ls /etc/php | sort -V | tail -n 1)"
if [[ -z "${version}" || ! -d "/etc/php/${version}/fpm" ]]; then
    echo "no php-fpm under /etc/php" >&2
    exit 1
fi
echo "==> PHP ${version}, php-fpm"
ln -sfn /etc/provisioner/wordpress/php.ini "/etc/php/${version}/fpm/conf.d/90-wordpress.ini"
systemctl enable --quiet "php${version}-fpm"
systemctl restart "php${version}-fpm"

echo "==> enabling site wordpress.conf"
printf 'upstream wordpress_php {\n    server unix:/run/php/php%s-fpm.sock;\n}\n' "${version}" \
    >/etc/nginx/conf.d/wordpress-php.conf
ln -sfn /etc/nginx/sites-available/wordpress.conf /etc/nginx/sites-enabled/wordpress.conf
rm -f /etc/nginx/sites-enabled/default
nginx -t
systemctl enable --quiet nginx
if systemctl is-active --quiet nginx; then
    systemctl reload nginx
else
    systemctl start nginx
fi
echo "==> nginx is $(systemctl is-active nginx)"
