#!/bin/bash
# Export hook: the app's data directory (the one of the database that
# /etc/pyapp/config.json names) as one tar stream on stdout. SQLite
# databases are copied with SQLite's online backup, run as the files' owner
# (a live database is never copied file by file, and no root-owned -wal or
# -shm file is left for the app); other files are copied as they are. Only
# the tar goes to stdout; diagnostics go to stderr.
set -euo pipefail

database="$(python3 -c 'import json; print(json.load(open("/etc/pyapp/config.json"))["database"])')"
data="$(dirname "${database}")"
owner="$(stat -c %U "${data}")"
work="$(mktemp -d /var/tmp/pyapp-export-XXXXXX)"
trap 'rm -rf "${work}"' EXIT
chown "${owner}" "${work}"

shopt -s nullglob dotglob
for path in "${data}"/*; do
    file="$(basename "${path}")"
    case "${file}" in
        *.db)
            echo "==> online backup of ${path}" >&2
            runuser -u "${owner}" -- sqlite3 "${path}" ".backup '${work}/${file}'"
            ;;
        *.db-wal | *.db-shm | *.db-journal) ;;  # part of the database's backup
        *) cp -a "${path}" "${work}/" ;;
    esac
done
echo "==> archiving ${data} ($(find "${work}" -type f | wc -l) files)" >&2
tar -C "${work}" --numeric-owner --owner=0 --group=0 -cf - .
