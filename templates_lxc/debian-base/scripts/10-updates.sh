#!/bin/bash
# Install pending updates (when TPL_UPGRADE is true) and enable unattended
# security upgrades. Safe to re-run.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if [[ "${TPL_UPGRADE}" == "true" ]]; then
    echo "==> refreshing package lists"
    apt-get update -q
    echo "==> installing pending updates"
    apt-get -q -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold dist-upgrade
else
    echo "==> skipping updates (upgrade = false)"
fi

echo "==> enabling unattended security upgrades"
cat > /etc/apt/apt.conf.d/20auto-upgrades <<'CONF'
APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";
CONF
echo "==> updates done"
