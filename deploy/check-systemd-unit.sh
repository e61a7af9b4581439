#!/usr/bin/env bash
# Checks deploy/zoomhook.service the way CI does: `systemd-analyze verify` must have nothing to
# say about it, and `systemd-analyze security` must rate its exposure at most 2.0 (of 10).
#
# Why a copy: verify refuses a unit whose ExecStart binary does not exist, and
# /usr/local/bin/zoomhook exists only where zoomhook is installed. The copy differs in that one
# path, which points at a binary that exists (the one just built if there is one).
# Why the output is read: verify exits 0 on unknown keys and unparsable values (it only warns
# and ignores them), so a misspelt hardening directive would pass silently otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

unit=deploy/zoomhook.service
# Overall exposure as systemd-analyze computes it, times ten: 20 means "2.0 OK".
max_exposure=20

if ! command -v systemd-analyze >/dev/null; then
    echo "check-systemd-unit: systemd-analyze not found (Debian package systemd)" >&2
    exit 1
fi

binary=/bin/true
for candidate in target/release/zoomhook target/debug/zoomhook; do
    if [[ -x $candidate ]]; then binary="$PWD/$candidate"; break; fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s|^ExecStart=/usr/local/bin/zoomhook |ExecStart=$binary |" "$unit" > "$work/zoomhook.service"
if ! grep -q "^ExecStart=$binary " "$work/zoomhook.service"; then
    echo "check-systemd-unit: $unit has no 'ExecStart=/usr/local/bin/zoomhook …' line to check" >&2
    exit 1
fi

if ! output=$(systemd-analyze verify --man=no "$work/zoomhook.service" 2>&1) || [[ -n $output ]]; then
    echo "check-systemd-unit: systemd-analyze verify found problems in $unit:" >&2
    echo "${output//$work\//deploy/}" >&2
    exit 1
fi

if ! output=$(systemd-analyze security --offline=true --threshold="$max_exposure" \
        "$work/zoomhook.service" 2>&1); then
    echo "check-systemd-unit: $unit is less hardened than allowed (exposure above ${max_exposure:0:1}.${max_exposure:1}):" >&2
    echo "$output" | grep -v '^✓' >&2
    exit 1
fi
echo "check-systemd-unit: $unit verifies; $(echo "$output" | tail -n 1 | sed 's/^→ //')"
