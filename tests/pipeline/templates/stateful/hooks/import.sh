#!/bin/bash
# replace the database with the one on stdin, checked first; a test makes it
# fail (/root/fail-import) or slow (/root/slow-import)
set -euo pipefail
staged="$(mktemp /var/lib/app/.import-XXXXXX)"
trap 'rm -f "$staged"' EXIT
cat > "$staged"
if [ -e /root/slow-import ]; then sleep 8; fi
if [ -e /root/fail-import ]; then echo "failing on purpose (/root/fail-import)" >&2; exit 4; fi
python3 -c "import sqlite3, sys; assert sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0] == 'ok'" "$staged"
mv -f "$staged" /var/lib/app/app.db
echo "imported $(stat -c %s /var/lib/app/app.db) bytes" >&2
