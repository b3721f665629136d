#!/bin/bash
# Put nginx in front of the app instead of Debian's default site. Safe to re-run.
set -euo pipefail

echo "==> enabling site pyapp.conf"
ln -sfn /etc/nginx/sites-available/pyapp.conf /etc/nginx/sites-enabled/pyapp.conf
rm -f /etc/nginx/sites-enabled/default
nginx -t
systemctl enable --quiet nginx
if systemctl is-active --quiet nginx; then
    systemctl reload nginx
else
    systemctl start nginx
fi
echo "==> nginx is $(systemctl is-active nginx)"
