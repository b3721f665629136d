#!/bin/bash
# the peer's host name becomes this container's in the notes
set -euo pipefail
python3 - <<'PY'
import os, sqlite3
db = sqlite3.connect("/var/lib/app/app.db")
db.execute("UPDATE notes SET body = replace(body, ?, ?)",
           (os.environ["PROV_PEER_HOSTNAME"], os.environ["PROV_HOSTNAME"]))
db.commit()
PY
