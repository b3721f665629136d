#!/bin/bash
# Set the time zone and the system locale from TPL_TIMEZONE and TPL_LOCALE.
# Safe to re-run: every step converges to the same state.
set -euo pipefail

zone="${TPL_TIMEZONE}"
if [[ ! -f "/usr/share/zoneinfo/${zone}" ]]; then
    echo "unknown time zone '${zone}' (no /usr/share/zoneinfo/${zone})" >&2
    exit 1
fi
echo "==> time zone ${zone}"
ln -sfn "/usr/share/zoneinfo/${zone}" /etc/localtime
echo "${zone}" > /etc/timezone

locale="${TPL_LOCALE}"
line="${locale} UTF-8"
if ! grep -qxF "${line}" /usr/share/i18n/SUPPORTED; then
    echo "unsupported locale '${locale}' (not in /usr/share/i18n/SUPPORTED)" >&2
    exit 1
fi
echo "==> locale ${locale}"
if ! grep -qxF "${line}" /etc/locale.gen; then
    # Uncomment the entry if present, append it otherwise.
    if grep -qxF "# ${line}" /etc/locale.gen; then
        sed -i "s|^# ${line}\$|${line}|" /etc/locale.gen
    else
        echo "${line}" >> /etc/locale.gen
    fi
fi
locale-gen
update-locale "LANG=${locale}"
echo "==> $(date '+%Z %z'), LANG=${locale}"
