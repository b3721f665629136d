#!/bin/bash
# Start the app under systemd with gunicorn from the virtualenv. Safe to re-run.
set -euo pipefail

if [[ ! -x /opt/pyapp/venv/bin/gunicorn ]]; then
    echo "gunicorn is missing from /opt/pyapp/venv (packages/app.pip not installed?)" >&2
    exit 1
fi
echo "==> $(/opt/pyapp/venv/bin/gunicorn --version)"

systemctl daemon-reload
systemctl enable --quiet pyapp
systemctl restart pyapp
for attempt in $(seq 1 30); do
    if curl -fsS --max-time 2 "http://127.0.0.1:${TPL_APP_PORT}/healthz" >/dev/null 2>&1; then
        break
    fi
    if [[ ${attempt} -eq 30 ]]; then
        echo "the app does not answer on port ${TPL_APP_PORT}" >&2
        journalctl -u pyapp -n 20 --no-pager >&2 || true
        exit 1
    fi
    sleep 0.5
done
echo "==> pyapp answers on 127.0.0.1:${TPL_APP_PORT}"
