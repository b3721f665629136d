#!/bin/bash
# Check that nginx serves the health endpoint and the rendered index page.
set -euo pipefail

# quiet while nginx settles (its first answers may be the default site's 404)
for attempt in $(seq 1 20); do
    if curl -fs --max-time 2 http://127.0.0.1/healthz >/dev/null; then
        break
    fi
    if [[ ${attempt} -eq 20 ]]; then
        curl -fsS --max-time 2 http://127.0.0.1/healthz >/dev/null || true  # says why
        echo "nginx does not answer on http://127.0.0.1/healthz" >&2
        exit 1
    fi
    sleep 0.5
done
echo "==> /healthz answers"

if ! curl -fsS --max-time 5 http://127.0.0.1/ | grep -q "<h1>"; then
    echo "the index page is missing its heading" >&2
    exit 1
fi
echo "==> index page served"
