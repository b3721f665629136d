#!/bin/bash
# Clone hook: a clone has its own address and a new password (redis_password
# is regenerated): put both into the installed settings, restart Redis and
# check that it answers with the new password. The password is read from the
# environment (perl's %ENV, REDISCLI_AUTH), never put on a command line.
set -euo pipefail

address="${PROV_IP:-}"
if [[ -z "${address}" ]]; then
    address="$(ip -4 -o addr show dev eth0 scope global | awk '{split($4, a, "/"); print a[1]; exit}')"
fi
if [[ -z "${address}" ]]; then
    echo "the container has no global IPv4 address" >&2
    exit 1
fi

echo "==> new password and address ${address} in the settings" >&2
# The staged copy too, so that re-running the scripts keeps the new password.
for settings in /etc/redis/provisioner.conf /etc/provisioner/redis/provisioner.conf; do
    if [[ -f "${settings}" ]]; then
        perl -i -pe 's/^requirepass .*/requirepass $ENV{TPL_REDIS_PASSWORD}/' "${settings}"
    fi
done
chown root:redis /etc/redis/provisioner.conf
chmod 0640 /etc/redis/provisioner.conf
printf 'bind 127.0.0.1 -::1 %s\n' "${address}" >/etc/redis/provisioner-bind.conf
chown root:redis /etc/redis/provisioner-bind.conf
chmod 0640 /etc/redis/provisioner-bind.conf

echo "==> restarting redis-server" >&2
# At the clone's first boot Redis could not bind the source's address, and
# systemd's restarts may have used up the unit's start limit: clear that,
# and give a restart that still fails two more tries before showing why.
systemctl reset-failed redis-server 2>/dev/null || true
for attempt in 1 2 3; do
    if systemctl restart redis-server; then
        break
    fi
    if [[ ${attempt} -eq 3 ]]; then
        journalctl -u redis-server -n 15 --no-pager >&2 || true
        exit 1
    fi
    sleep 2
    systemctl reset-failed redis-server 2>/dev/null || true
done
export REDISCLI_AUTH="${TPL_REDIS_PASSWORD}"
for attempt in $(seq 1 60); do
    if [[ "$(redis-cli -h "${address}" ping 2>/dev/null || true)" == "PONG" ]]; then
        break
    fi
    if [[ ${attempt} -eq 60 ]]; then
        echo "Redis does not answer on ${address}:6379 with the new password" >&2
        exit 1
    fi
    sleep 0.5
done
echo "==> Redis answers on ${address}:6379 with the new password" >&2
