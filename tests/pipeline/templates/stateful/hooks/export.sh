#!/bin/bash
# a consistent copy of the database (SQLite's backup API) on stdout
set -euo pipefail
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
python3 -c "import sqlite3, sys; sqlite3.connect('/var/lib/app/app.db').backup(sqlite3.connect(sys.argv[1]))" "$tmp"
cat "$tmp"
