#!/bin/bash
set -euo pipefail
for i in $(seq 1 "$TPL_COUNT"); do
  echo "line $i"
  if [ "$TPL_PAUSE_MS" -gt 0 ] && [ $((i % 100)) -eq 0 ]; then
    sleep "$(printf '%d.%03d' $((TPL_PAUSE_MS / 1000)) $((TPL_PAUSE_MS % 1000)))"
  fi
done
echo "to stderr" >&2
