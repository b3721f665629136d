#!/bin/bash
set -euo pipefail
cat /etc/bench/app.conf
/usr/local/bin/bench-tool
echo done
