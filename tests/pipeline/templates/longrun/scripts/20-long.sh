#!/bin/bash
set -euo pipefail
echo "long script started"
sleep 10
echo "long script done"
