#!/bin/bash
# Clone hook: a clone has its own address and a new password (db_password is
# regenerated). PostgreSQL listens on every address of the container, so it
# answers on the new one already; allow it in our pg_hba.conf block (as
# scripts/10-configure.sh does) and reload, set the role's new password and
# log in with it over TCP. (A source configured by an older release listened
# on its own address only: that one setting needs a restart, bounded in time.)
# The password travels in the environment, never on a command line.
set -euo pipefail

version="$(ls /etc/postgresql | sort -V | tail -n 1)"
conf="/etc/postgresql/${version}/main"
if [[ -z "${version}" || ! -d "${conf}" ]]; then
    echo "no PostgreSQL cluster under /etc/postgresql" >&2
    exit 1
fi
address="${PROV_IP:-}"
if [[ -z "${address}" ]]; then
    address="$(ip -4 -o addr show dev eth0 scope global | awk '{split($4, a, "/"); print a[1]; exit}')"
fi
if [[ -z "${address}" ]]; then
    echo "the container has no global IPv4 address" >&2
    exit 1
fi

restart=no
listen="${conf}/conf.d/60-listen.conf"
wanted="listen_addresses = '*'"
if [[ "$(cat "${listen}" 2>/dev/null || true)" != "${wanted}" ]]; then
    printf '%s\n' "${wanted}" >"${listen}"
    chown postgres:postgres "${listen}"
    restart=yes
fi
reload=no
begin="# BEGIN lxc-provisioner"
end="# END lxc-provisioner"
hba="${conf}/pg_hba.conf"
block="$({
    echo "${begin}"
    cat /etc/provisioner/postgresql/pg_hba.rules
    printf "host    all       all   %s/32   scram-sha-256\n" "${address}"
    echo "${end}"
})"
if [[ "$(sed -n "/^${begin}\$/,/^${end}\$/p" "${hba}")" != "${block}" ]]; then
    sed -i "/^${begin}\$/,/^${end}\$/d" "${hba}"
    printf '%s\n' "${block}" >>"${hba}"
    reload=yes
fi
cd /
# A clone is a copy of a running server: at its first start PostgreSQL
# recovers from its WAL, which takes a while after heavy writes.
wait_ready() {
    for attempt in $(seq 1 600); do
        if pg_isready -q -h localhost; then
            return 0
        fi
        if [[ ${attempt} -eq 1 ]]; then
            echo "==> waiting for PostgreSQL (recovering the copy)" >&2
        fi
        sleep 1
    done
    echo "PostgreSQL did not become ready within 600 s" >&2
    exit 1
}
wait_ready
if [[ ${restart} == yes ]]; then
    echo "==> listening on every address of the container; restarting PostgreSQL" >&2
    timeout 120 systemctl restart postgresql
elif [[ ${reload} == yes ]]; then
    echo "==> allowing ${address}; reloading PostgreSQL's configuration" >&2
    runuser -u postgres -- psql -X -q -At -c "SELECT pg_reload_conf()" >/dev/null
fi
wait_ready

echo "==> new password of role ${TPL_DB_USER}" >&2
cd /
runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -v db_user="${TPL_DB_USER}" <<'SQL'
\getenv db_password TPL_DB_PASSWORD
ALTER ROLE :"db_user" WITH LOGIN PASSWORD :'db_password';
SQL
result="$(PGPASSWORD="${TPL_DB_PASSWORD}" psql -X -At -v ON_ERROR_STOP=1 \
    -h "${address}" -U "${TPL_DB_USER}" -d "${TPL_DB_NAME}" \
    -c "SELECT current_user || '@' || current_database()")"
if [[ "${result}" != "${TPL_DB_USER}@${TPL_DB_NAME}" ]]; then
    echo "unexpected answer from PostgreSQL: ${result}" >&2
    exit 1
fi
echo "==> ${result} logs in over TCP on ${address} with the new password" >&2
