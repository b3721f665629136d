#!/bin/bash
# Check that Redis answers on the container's address with the password and
# refuses commands without it. The password goes through REDISCLI_AUTH, not
# the command line.
set -euo pipefail

address="$(ip -4 -o addr show dev eth0 scope global | awk '{split($4, a, "/"); print a[1]; exit}')"
for attempt in $(seq 1 20); do
    answer="$(REDISCLI_AUTH="${TPL_REDIS_PASSWORD}" redis-cli -h "${address}" ping 2>/dev/null || true)"
    if [[ "${answer}" == "PONG" ]]; then
        break
    fi
    if [[ ${attempt} -eq 20 ]]; then
        echo "Redis does not answer PING on ${address}:6379 (got '${answer}')" >&2
        exit 1
    fi
    sleep 0.5
done
echo "==> PING on ${address}:6379 answered PONG"

if redis-cli -h "${address}" ping 2>&1 | grep -q PONG; then
    echo "Redis answered without a password" >&2
    exit 1
fi
echo "==> commands without the password are refused"
