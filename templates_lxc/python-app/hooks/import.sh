#!/bin/bash
# Import hook: replace the app's data directory with the tar stream on stdin
# (what export.sh writes). The stream is unpacked and every SQLite database
# in it checked before the app stops; then the directories are swapped, the
# app started again and this waits until it answers: a broken stream leaves
# the data as it was. Importing the same stream twice gives the same data.
# Diagnostics on stderr.
set -euo pipefail

database="$(python3 -c 'import json; print(json.load(open("/etc/pyapp/config.json"))["database"])')"
data="$(dirname "${database}")"
parent="$(dirname "${data}")"
name="$(basename "${data}")"
owner="$(stat -c %U:%G "${data}")"
# What an interrupted import left behind.
rm -rf "${parent}/.${name}-import-"* "${parent}/.${name}-replaced-"*
staged="$(mktemp -d "${parent}/.${name}-import-XXXXXX")"
replaced="${staged/-import-/-replaced-}"
trap 'rm -rf "${staged}" "${replaced}"' EXIT
trap 'exit 143' TERM INT

tar -C "${staged}" --no-same-owner -xf -
shopt -s nullglob
for db in "${staged}"/*.db; do
    check="$(sqlite3 "${db}" 'PRAGMA integrity_check')"
    if [[ "${check}" != "ok" ]]; then
        echo "$(basename "${db}") in the stream is damaged: ${check}" >&2
        exit 1
    fi
done
if [[ ! -f "${staged}/$(basename "${database}")" ]]; then
    echo "the stream has no $(basename "${database}"); nothing was changed" >&2
    exit 1
fi
echo "==> unpacked $(find "${staged}" -type f | wc -l) files" >&2
chown -R "${owner}" "${staged}"
chmod 0750 "${staged}"

echo "==> stopping pyapp" >&2
systemctl stop pyapp
if [[ -e "${data}" ]]; then
    mv -T "${data}" "${replaced}"
fi
mv -T "${staged}" "${data}"

answers() {
    for _ in $(seq 1 60); do
        if curl -fsS --max-time 2 "http://127.0.0.1:${TPL_APP_PORT}/healthz" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    return 1
}
echo "==> starting pyapp" >&2
systemctl start pyapp
if ! answers; then
    echo "the app does not answer on port ${TPL_APP_PORT} with the imported data" >&2
    journalctl -u pyapp -n 20 --no-pager >&2 || true
    if [[ -e "${replaced}" ]]; then
        echo "==> putting the previous data back" >&2
        systemctl stop pyapp
        mv -T "${data}" "${staged}"
        mv -T "${replaced}" "${data}"
        systemctl start pyapp
    fi
    exit 1
fi
echo "==> imported; the app answers: $(curl -fsS --max-time 2 "http://127.0.0.1:${TPL_APP_PORT}/healthz")" >&2
