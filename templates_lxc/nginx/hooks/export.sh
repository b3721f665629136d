#!/bin/bash
# Export hook: the site's files, everything under the web root the template
# serves (/var/www/html, files/site.conf.j2), as one tar stream on stdout.
# Only the tar goes to stdout; diagnostics go to stderr.
set -euo pipefail

root=/var/www/html
echo "==> archiving ${root} ($(find "${root}" -type f | wc -l) files)" >&2
tar -C "${root}" --numeric-owner -cf - .
