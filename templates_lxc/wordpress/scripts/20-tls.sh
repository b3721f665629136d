#!/bin/bash
# The site's TLS certificate: self-signed, made here (the key never leaves
# the container), for the container's address and host name and the site's
# host name (subjectAltName). Made again when those change or when
# WP_TLS_RENEW=yes (a clone: hooks/clone.sh). Its SHA-256 fingerprint is
# printed for clients to pin. Safe to re-run.
set -euo pipefail

dir=/etc/ssl/wordpress
address="${PROV_IP:-}"
if [[ -z "${address}" ]]; then
    address="$(ip -4 -o addr show dev eth0 scope global | awk '{split($4, a, "/"); print a[1]; exit}')"
fi
if [[ -z "${address}" ]]; then
    echo "the container has no global IPv4 address" >&2
    exit 1
fi
name="$(hostname)"
san="IP:${address},DNS:${name},DNS:localhost,IP:127.0.0.1"
if [[ -n "${TPL_SITE_HOST}" && "${TPL_SITE_HOST}" != "${address}" && "${TPL_SITE_HOST}" != "${name}" ]]; then
    if [[ "${TPL_SITE_HOST}" =~ ^[0-9]+(\.[0-9]+){3}$ ]]; then
        san+=",IP:${TPL_SITE_HOST}"
    else
        san+=",DNS:${TPL_SITE_HOST}"
    fi
fi
subject="${TPL_SITE_HOST:-${address}}"

install -d -m 0755 "${dir}"
if [[ "${WP_TLS_RENEW:-no}" == yes || ! -s "${dir}/cert.pem" || ! -s "${dir}/key.pem" \
      || "$(cat "${dir}/san" 2>/dev/null || true)" != "${san}" ]]; then
    echo "==> a new self-signed certificate for ${san}"
    umask 077
    if ! err="$(openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -days 825 -subj "/CN=${subject}" -addext "subjectAltName=${san}" \
                -addext "keyUsage=critical,digitalSignature,keyCertSign" \
                -addext "extendedKeyUsage=serverAuth" \
                -keyout "${dir}/key.pem.new" -out "${dir}/cert.pem.new" 2>&1)"; then
        echo "openssl could not make the certificate: ${err}" >&2
        exit 1
    fi
    chmod 0644 "${dir}/cert.pem.new"
    mv -f "${dir}/key.pem.new" "${dir}/key.pem"
    mv -f "${dir}/cert.pem.new" "${dir}/cert.pem"
    printf '%s\n' "${san}" >"${dir}/san"
    chmod 0644 "${dir}/san"
else
    echo "==> the certificate for ${san} is in place"
fi
fingerprint="$(openssl x509 -in "${dir}/cert.pem" -noout -fingerprint -sha256 | cut -d= -f2)"
printf '%s\n' "${fingerprint}" >"${dir}/fingerprint"
chmod 0644 "${dir}/fingerprint"
echo "==> TLS certificate SHA-256 fingerprint: ${fingerprint}"
