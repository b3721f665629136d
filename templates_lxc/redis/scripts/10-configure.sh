#!/bin/bash
# Include the deployed settings and bind to localhost plus the container's
# address, then restart Redis. Safe to re-run.
set -euo pipefail

address="$(ip -4 -o addr show dev eth0 scope global | awk '{split($4, a, "/"); print a[1]; exit}')"
if [[ -z "${address}" ]]; then
    echo "the container has no global IPv4 address" >&2
    exit 1
fi

echo "==> installing settings (password, memory limit, policy)"
install -o root -g redis -m 0640 /etc/provisioner/redis/provisioner.conf /etc/redis/provisioner.conf
printf 'bind 127.0.0.1 -::1 %s\n' "${address}" > /etc/redis/provisioner-bind.conf
chown root:redis /etc/redis/provisioner-bind.conf
chmod 0640 /etc/redis/provisioner-bind.conf

# Later directives win, so the includes go last; add each once.
for include in /etc/redis/provisioner.conf /etc/redis/provisioner-bind.conf; do
    if ! grep -qxF "include ${include}" /etc/redis/redis.conf; then
        echo "include ${include}" >> /etc/redis/redis.conf
    fi
done
echo "==> binding to 127.0.0.1 and ${address}"

systemctl enable --quiet redis-server
systemctl restart redis-server
echo "==> redis-server is $(systemctl is-active redis-server)"
