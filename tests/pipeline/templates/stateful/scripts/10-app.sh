#!/bin/bash
# a database with a row written once, and a web server for /srv/app
set -euo pipefail
mkdir -p /var/lib/app
python3 - <<'PY'
import sqlite3
db = sqlite3.connect("/var/lib/app/app.db")
db.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
if not db.execute("SELECT 1 FROM notes").fetchone():
    import socket
    db.execute("INSERT INTO notes (body) VALUES ('first note')")
    db.execute("INSERT INTO notes (body) VALUES (?)", (f"home: http://{socket.gethostname()}/",))
    db.execute("INSERT INTO notes (body) VALUES ('email: alice@example.com')")
db.commit()
PY
cat > /etc/systemd/system/app-web.service <<'UNIT'
[Unit]
Description=the test app's web page
[Service]
ExecStart=/usr/bin/python3 -m http.server 8080 --directory /srv/app
Restart=always
[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now app-web.service
echo "app ready"
