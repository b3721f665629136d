#!/bin/bash
# Import hook: replace the dataset with the RDB snapshot on stdin (what
# export.sh writes). The stream is read and checked before Redis stops; then
# Redis is stopped, dump.rdb replaced and Redis started, and this waits
# until it answers. With appendonly yes the append-only file is rebuilt from
# the imported data. Importing the same stream twice gives the same dataset.
# Diagnostics on stderr; the password only in REDISCLI_AUTH.
set -euo pipefail

# Debian's redis.conf: dir /var/lib/redis, dbfilename dump.rdb (the template
# keeps both); our settings are included last, so they decide appendonly.
data_dir=/var/lib/redis
rdb="${data_dir}/dump.rdb"
settings=/etc/redis/provisioner.conf
export REDISCLI_AUTH="${TPL_REDIS_PASSWORD}"

rm -f "${data_dir}"/.import-*.rdb  # what an interrupted import left behind
staged="$(mktemp "${data_dir}/.import-XXXXXX.rdb")"
aof_switched=no
cleanup() {
    rm -f "${staged}"
    if [[ ${aof_switched} == yes ]]; then
        sed -i 's/^appendonly no$/appendonly yes/' "${settings}"
    fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT

wait_for_redis() {
    for attempt in $(seq 1 120); do
        if [[ "$(redis-cli ping 2>/dev/null || true)" == "PONG" ]]; then
            return 0
        fi
        if [[ ${attempt} -eq 120 ]]; then
            echo "Redis does not answer PING after the import" >&2
            journalctl -u redis-server -n 20 --no-pager >&2 || true
            return 1
        fi
        sleep 0.5  # LOADING while a large dataset is read
    done
}

cat >"${staged}"
echo "==> received $(stat -c %s "${staged}") bytes" >&2
if ! redis-check-rdb "${staged}" >/dev/null 2>&1; then
    echo "the stream is not a valid RDB snapshot; nothing was changed" >&2
    exit 1
fi
chown redis:redis "${staged}"
chmod 0660 "${staged}"

aof=no
if grep -qx 'appendonly yes' "${settings}"; then
    aof=yes
fi

echo "==> stopping redis-server" >&2
systemctl stop redis-server
mv -f "${staged}" "${rdb}"
if [[ ${aof} == yes ]]; then
    # Redis 7 starting with appendonly yes and no AOF creates an empty one
    # and ignores dump.rdb: start it with appendonly no so that it loads
    # dump.rdb, then switch the AOF on, which writes it from the data.
    rm -rf "${data_dir}/appendonlydir"
    sed -i 's/^appendonly yes$/appendonly no/' "${settings}"
    aof_switched=yes
fi
echo "==> starting redis-server" >&2
systemctl start redis-server
wait_for_redis

if [[ ${aof} == yes ]]; then
    echo "==> rebuilding the append-only file" >&2
    redis-cli config set appendonly yes >/dev/null
    for attempt in $(seq 1 600); do
        info="$(redis-cli info persistence | tr -d '\r')"
        if grep -qx 'aof_enabled:1' <<<"${info}" && grep -qx 'aof_rewrite_in_progress:0' <<<"${info}" \
            && grep -qx 'aof_rewrite_scheduled:0' <<<"${info}"; then
            break
        fi
        if [[ ${attempt} -eq 600 ]]; then
            echo "the append-only file was not rewritten in time" >&2
            exit 1
        fi
        sleep 0.5
    done
    if ! grep -qx 'aof_last_bgrewrite_status:ok' <<<"${info}"; then
        echo "rewriting the append-only file failed" >&2
        exit 1
    fi
    sed -i 's/^appendonly no$/appendonly yes/' "${settings}"
    aof_switched=no
fi
echo "==> imported: $(redis-cli dbsize) keys" >&2
