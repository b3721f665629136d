#!/bin/bash
# Rewrite hook: after an import (or in a clone) the database holds the peer's
# URLs. Replace them by this site's, https://<site_host or this container's
# address>, in every table, serialized PHP values included (in PHP:
# unserialized, replaced, serialized again; files/lib/rewrite.php says
# exactly what is replaced). Diagnostics on stderr.
set -euo pipefail

cd /
address="${PROV_IP:-}"
if [[ -z "${address}" ]]; then
    address="$(ip -4 -o addr show dev eth0 scope global | awk '{split($4, a, "/"); print a[1]; exit}')"
fi
WP_SITE_URL="https://${TPL_SITE_HOST:-${address}}" \
WP_OLD_HOSTS="${PROV_PEER_IP:-} ${PROV_PEER_HOSTNAME:-}" \
    runuser -u www-data -- php -d display_errors=stderr /usr/local/lib/wp-provisioner/rewrite.php >&2
