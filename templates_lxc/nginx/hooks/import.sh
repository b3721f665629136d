#!/bin/bash
# Import hook: replace the site's files with the tar stream on stdin (what
# export.sh writes). The stream is unpacked next to the web root, then the
# two directories are swapped: a broken stream leaves the site as it was.
# Importing the same stream twice gives the same files. Diagnostics on stderr.
set -euo pipefail

root=/var/www/html
parent="$(dirname "${root}")"
name="$(basename "${root}")"
# What an interrupted import left behind.
rm -rf "${parent}/.${name}-import-"* "${parent}/.${name}-replaced-"*
staged="$(mktemp -d "${parent}/.${name}-import-XXXXXX")"
replaced="${staged/-import-/-replaced-}"
trap 'rm -rf "${staged}" "${replaced}"' EXIT
trap 'exit 143' TERM INT

chmod 0755 "${staged}"  # as the web root; an archived "." sets its own
tar -C "${staged}" --numeric-owner -xf -
echo "==> unpacked $(find "${staged}" -type f | wc -l) files" >&2
if [[ -e "${root}" ]]; then
    mv -T "${root}" "${replaced}"
fi
mv -T "${staged}" "${root}"
echo "==> ${root} replaced" >&2
