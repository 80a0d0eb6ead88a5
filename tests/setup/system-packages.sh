#!/usr/bin/env bash
# Debian packages a fresh machine may lack: git, bubblewrap and the tools that
# make each workspace a filesystem of its own (every local server runs in a
# bwrap sandbox on one, so `make dev` needs them too), and for the
# tests also npm and the system Chromium that playwright drives (never a
# browser download). Root installs them with apt-get; anyone else is told
# what is missing.
#   tests/setup/system-packages.sh        everything the tests need
#   tests/setup/system-packages.sh dev    only what `make dev` needs
set -euo pipefail

missing=()
command -v git >/dev/null || missing+=(git)
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v setpriv >/dev/null || missing+=(util-linux)
# each workspace is an ext4 filesystem of its profile's disk (glue/hub/disk.py)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
command -v losetup >/dev/null || missing+=(mount)
if [ "${1:-test}" != dev ]; then
    command -v chromium >/dev/null || missing+=(chromium)
    command -v npm >/dev/null || missing+=(npm)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} (install them with apt-get as root)" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
