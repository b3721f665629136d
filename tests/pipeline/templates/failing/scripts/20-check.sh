#!/bin/bash
set -euo pipefail
echo "checking /root/fail-now"
if [ -e /root/fail-now ]; then
  echo "found /root/fail-now: failing on purpose" >&2
  exit 3
fi
echo "check passed"
