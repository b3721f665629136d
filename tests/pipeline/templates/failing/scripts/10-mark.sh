#!/bin/bash
set -euo pipefail
# only the first run plants the marker: after a fix (rm /root/fail-now) a
# re-run of this script would plant it again and the retry would fail
if [ ! -e /root/.marked ]; then
  touch /root/.marked /root/fail-now
fi
echo "10-mark.sh ran"
