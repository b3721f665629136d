#!/bin/bash
set -euo pipefail
for i in $(seq 1 "$TPL_COUNT"); do
  echo "line $i"
done
