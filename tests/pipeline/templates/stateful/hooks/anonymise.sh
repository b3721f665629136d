#!/bin/bash
# e-mail addresses are personal data
set -euo pipefail
python3 - <<'PY'
import sqlite3
db = sqlite3.connect("/var/lib/app/app.db")
db.execute("UPDATE notes SET body = 'email: [anonymised]' WHERE body LIKE 'email:%'")
db.commit()
PY
