#!/bin/bash
# Check the whole stack through nginx: health (reads the database) and the page.
set -euo pipefail

for attempt in $(seq 1 20); do
    if answer="$(curl -fsS --max-time 2 http://127.0.0.1/healthz)"; then
        break
    fi
    if [[ ${attempt} -eq 20 ]]; then
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
