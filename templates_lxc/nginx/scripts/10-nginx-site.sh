#!/bin/bash
# Enable the deployed site instead of Debian's default one and (re)load nginx.
# Safe to re-run.
set -euo pipefail

echo "==> enabling site provisioner.conf"
ln -sfn /etc/nginx/sites-available/provisioner.conf /etc/nginx/sites-enabled/provisioner.conf
rm -f /etc/nginx/sites-enabled/default

htpasswd=/etc/nginx/provisioner.htpasswd
if [ "${TPL_BASIC_AUTH}" = "true" ]; then
    echo "==> basic auth for user ${TPL_BASIC_AUTH_USER}"
    # the password goes to openssl on stdin, never on a command line
    hash="$(printf '%s' "${TPL_BASIC_AUTH_PASSWORD}" | openssl passwd -6 -stdin)"
    umask 027
    printf '%s:%s\n' "${TPL_BASIC_AUTH_USER}" "${hash}" > "${htpasswd}.new"
    chown root:www-data "${htpasswd}.new"
    mv -f "${htpasswd}.new" "${htpasswd}"
else
    rm -f "${htpasswd}"
fi

echo "==> checking the configuration"
nginx -t

echo "==> starting nginx"
systemctl enable --quiet nginx
if systemctl is-active --quiet nginx; then
    systemctl reload nginx
else
    systemctl start nginx
fi
echo "==> nginx is $(systemctl is-active nginx)"
