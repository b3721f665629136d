#!/bin/bash
# The site as a client sees it: HTTP redirects to HTTPS, and the REST API
# answers over HTTPS with the site's name, the certificate verified against
# itself for the site's host name. Prints the certificate's fingerprint.
set -euo pipefail

cd /
address="${PROV_IP:-}"
if [[ -z "${address}" ]]; then
    address="$(ip -4 -o addr show dev eth0 scope global | awk '{split($4, a, "/"); print a[1]; exit}')"
fi
host="${TPL_SITE_HOST:-${address}}"
cert=/etc/ssl/wordpress/cert.pem

# quiet while php-fpm settles; the last attempt says why it failed
for attempt in $(seq 1 30); do
    if body="$(curl -fs --max-time 5 --cacert "${cert}" --resolve "${host}:443:127.0.0.1" \
               "https://${host}/wp-json/")"; then
        break
    fi
    if [[ ${attempt} -eq 30 ]]; then
        curl -fsS --max-time 5 --cacert "${cert}" --resolve "${host}:443:127.0.0.1" \
            "https://${host}/wp-json/" >/dev/null || true
        echo "no answer from https://${host}/wp-json/" >&2
        exit 1
    fi
    sleep 1
done
name="$(printf '%s' "${body}" | php -r \
    'echo html_entity_decode((string) (json_decode(stream_get_contents(STDIN))->name ?? ""), ENT_QUOTES | ENT_HTML5);')"
if [[ "${name}" != "${TPL_SITE_TITLE}" ]]; then
    echo "https://${host}/wp-json/ names the site '${name}', not '${TPL_SITE_TITLE}'" >&2
    exit 1
fi
echo "==> https://${host}/wp-json/ answers: ${name}"

redirect="$(curl -s -o /dev/null --max-time 5 -w '%{http_code} %{redirect_url}' \
    --resolve "${host}:80:127.0.0.1" "http://${host}/wp-json/")"
if [[ "${redirect}" != "301 https://${host}/wp-json/" ]]; then
    echo "http://${host}/ does not redirect to HTTPS: ${redirect}" >&2
    exit 1
fi
echo "==> http://${host}/ redirects to https://${host}/"
echo "==> TLS certificate SHA-256 fingerprint: $(cat /etc/ssl/wordpress/fingerprint)"
