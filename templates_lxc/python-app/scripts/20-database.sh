#!/bin/bash
# Create the SQLite database and its table (CREATE TABLE IF NOT EXISTS, so
# re-running keeps the data).
set -euo pipefail

echo "==> initialising the database"
cd /opt/pyapp
runuser -u pyapp -- /usr/bin/python3 /opt/pyapp/app.py --init-db
