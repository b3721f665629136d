"""A tiny notes app: WSGI with the standard library and SQLite.

Deployed by lxc-provisioner (template python-app) and served by gunicorn
behind nginx. ``python3 app.py --init-db`` creates the database.
"""

import contextlib
import html
import json
import os
import sqlite3
import sys
from urllib.parse import parse_qs

CONFIG_PATH = os.environ.get("PYAPP_CONFIG", "/etc/pyapp/config.json")
MAX_BODY = 16 * 1024

with open(CONFIG_PATH, encoding="utf-8") as config_file:
    CONFIG = json.load(config_file)

PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title>
<style>body {{ font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; }}</style>
</head>
<body>
<h1>{title}</h1>
<form method="post" action="/notes"><input name="body" maxlength="500" required autofocus>
<button>Add</button></form>
<ul>{notes}</ul>
</body>
</html>
"""


def connect():
    db = sqlite3.connect(CONFIG["database"], timeout=5)
    db.execute("PRAGMA busy_timeout = 5000")
    return db


def init_db():
    with contextlib.closing(connect()) as db, db:
        db.execute("PRAGMA journal_mode = WAL")  # readers do not block the writer
        db.execute(
            "CREATE TABLE IF NOT EXISTS notes ("
            " id INTEGER PRIMARY KEY,"
            " body TEXT NOT NULL,"
            " created TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )


def respond(start_response, status, body, content_type="text/html; charset=utf-8", headers=()):
    data = body.encode("utf-8")
    start_response(
        status,
        [("Content-Type", content_type), ("Content-Length", str(len(data))), *headers],
    )
    return [data]


def index(start_response):
    with contextlib.closing(connect()) as db:
        rows = db.execute("SELECT body, created FROM notes ORDER BY id DESC LIMIT 100").fetchall()
    notes = "".join(
        f"<li>{html.escape(body)} <small>{html.escape(created)}</small></li>"
        for body, created in rows
    )
    return respond(
        start_response, "200 OK", PAGE.format(title=html.escape(CONFIG["title"]), notes=notes)
    )


def add_note(environ, start_response):
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if not 0 < length <= MAX_BODY:
        return respond(start_response, "400 Bad Request", "bad request\n", "text/plain")
    form = parse_qs(environ["wsgi.input"].read(length).decode("utf-8", "replace"))
    body = (form.get("body") or [""])[0].strip()[:500]
    if body:
        with contextlib.closing(connect()) as db, db:
            db.execute("INSERT INTO notes (body) VALUES (?)", (body,))
    return respond(start_response, "303 See Other", "", headers=[("Location", "/")])


def healthz(start_response):
    with contextlib.closing(connect()) as db:
        (count,) = db.execute("SELECT count(*) FROM notes").fetchone()
    return respond(start_response, "200 OK", f"ok notes={count}\n", "text/plain; charset=utf-8")


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    method = environ.get("REQUEST_METHOD", "GET")
    if path == "/healthz" and method in ("GET", "HEAD"):
        return healthz(start_response)
    if path == "/" and method in ("GET", "HEAD"):
        return index(start_response)
    if path == "/notes" and method == "POST":
        return add_note(environ, start_response)
    return respond(start_response, "404 Not Found", "not found\n", "text/plain")


if __name__ == "__main__":
    if sys.argv[1:] == ["--init-db"]:
        init_db()
        print(f"database ready: {CONFIG['database']}")
    else:
        sys.exit("usage: app.py --init-db")
