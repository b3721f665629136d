#!/bin/bash
# a listener on 8080 that opens late, so the finalize phase (health check)
# lasts a while; a rerun after a crash replaces it
set -euo pipefail
systemctl stop phases-late.service 2>/dev/null || true
systemctl reset-failed phases-late.service 2>/dev/null || true
systemd-run --unit=phases-late --quiet /bin/sh -c \
  "sleep $TPL_LATE_SECONDS; exec python3 -m http.server --bind 0.0.0.0 8080"
echo "port 8080 opens in $TPL_LATE_SECONDS s"
