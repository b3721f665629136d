#!/bin/bash
# Check the whole stack through nginx: health (reads the database) and the page.
set -euo pipefail

# quiet while the stack settles; the last attempt says why it failed
for attempt in $(seq 1 20); do
    if answer="$(curl -fs --max-time 2 http://127.0.0.1/healthz)"; then
        break
    fi
    if [[ ${attempt} -eq 20 ]]; then
        curl -fsS --max-time 2 http://127.0.0.1/healthz >/dev/null || true
        echo "no answer from http://127.0.0.1/healthz through nginx" >&2
        exit 1
    fi
    sleep 0.5
done
echo "==> /healthz through nginx: ${answer}"

if ! curl -fsS --max-time 5 http://127.0.0.1/ | grep -q "<h1>"; then
    echo "the app's page is missing its heading" >&2
    exit 1
fi
echo "==> the app's page is served through nginx"
