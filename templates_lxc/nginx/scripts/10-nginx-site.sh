#!/bin/bash
# Enable the deployed site instead of Debian's default one and (re)load nginx.
# Safe to re-run.
set -euo pipefail

echo "==> enabling site provisioner.conf"
ln -sfn /etc/nginx/sites-available/provisioner.conf /etc/nginx/sites-enabled/provisioner.conf
rm -f /etc/nginx/sites-enabled/default

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
