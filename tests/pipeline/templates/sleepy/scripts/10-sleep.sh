#!/bin/bash
set -euo pipefail
echo "going to sleep"
sleep 60
echo "woke up"
