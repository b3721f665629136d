#!/bin/bash
set -euo pipefail
if [ -n "$TPL_FAIL_MARKER" ] && [ -e "$TPL_FAIL_MARKER" ]; then
  echo "found $TPL_FAIL_MARKER: failing on purpose" >&2
  exit 3
fi
echo "check passed"
