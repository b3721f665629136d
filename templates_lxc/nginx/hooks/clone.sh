#!/bin/bash
# Clone hook: the clone's site config was deployed again with its own
# variables (a new basic auth password, or basic auth turned on for a
# staging clone); apply it as the site script does, then reload nginx.
set -euo pipefail
exec bash /var/lib/lxc-provisioner/scripts/10-nginx-site.sh
