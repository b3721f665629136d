#!/bin/bash
# The unprivileged user the app runs as, and its data directory. Safe to re-run.
set -euo pipefail

if ! id -u pyapp >/dev/null 2>&1; then
    echo "==> creating system user pyapp"
    adduser --system --group --home /var/lib/pyapp --no-create-home pyapp
else
    echo "==> system user pyapp exists"
fi
install -d -o pyapp -g pyapp -m 0750 /var/lib/pyapp
echo "==> data directory /var/lib/pyapp ready"
