#!/bin/bash
# Install the staged configuration into the cluster's conf.d, listen on the
# container's addresses (localhost and eth0: '*', so a clone with a new
# address needs no restart), allow the configured network.
# Safe to re-run.
set -euo pipefail

version="$(ls /etc/postgresql | sort -V | tail -n 1)"
conf="/etc/postgresql/${version}/main"
if [[ -z "${version}" || ! -d "${conf}" ]]; then
    echo "no PostgreSQL cluster under /etc/postgresql" >&2
    exit 1
fi
echo "==> PostgreSQL ${version} cluster main"

address="$(ip -4 -o addr show dev eth0 scope global | awk '{split($4, a, "/"); print a[1]; exit}')"
if [[ -z "${address}" ]]; then
    echo "the container has no global IPv4 address" >&2
    exit 1
fi
echo "==> listening on localhost and ${address} (every address of the container)"

install -d -o postgres -g postgres -m 0755 "${conf}/conf.d"
install -o postgres -g postgres -m 0644 /etc/provisioner/postgresql/provisioner.conf \
    "${conf}/conf.d/50-provisioner.conf"
printf "listen_addresses = '*'\n" > "${conf}/conf.d/60-listen.conf"
chown postgres:postgres "${conf}/conf.d/60-listen.conf"

# Replace our block in pg_hba.conf (between the markers), keep everything else.
begin="# BEGIN lxc-provisioner"
end="# END lxc-provisioner"
hba="${conf}/pg_hba.conf"
sed -i "/^${begin}\$/,/^${end}\$/d" "${hba}"
{
    echo "${begin}"
    cat /etc/provisioner/postgresql/pg_hba.rules
    # The container itself, so 30-verify.sh can log in over its own address.
    printf "host    all       all   %s/32   scram-sha-256\n" "${address}"
    echo "${end}"
} >> "${hba}"

echo "==> restarting PostgreSQL"
systemctl enable --quiet postgresql
systemctl restart postgresql
for attempt in $(seq 1 30); do
    if pg_isready -q -h localhost; then
        break
    fi
    if [[ ${attempt} -eq 30 ]]; then
        echo "PostgreSQL did not become ready" >&2
        exit 1
    fi
    sleep 1
done
echo "==> PostgreSQL is ready"
