#!/bin/bash
# Anonymise hook: scrub personal data from the imported site (users other
# than the administrator, comment authors, privacy requests; see
# files/lib/anonymise.php). Diagnostics on stderr.
set -euo pipefail

cd /
runuser -u www-data -- php -d display_errors=stderr /usr/local/lib/wp-provisioner/anonymise.php >&2
