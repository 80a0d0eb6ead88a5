#!/usr/bin/env bash
# Debian packages the tests need and a fresh machine may lack: git, and the
# system Chromium that playwright drives (never a browser download). Root
# installs them with apt-get; anyone else is told what is missing.
set -euo pipefail

missing=()
command -v git >/dev/null || missing+=(git)
command -v chromium >/dev/null || missing+=(chromium)
command -v npm >/dev/null || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} (install them with apt-get as root)" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
