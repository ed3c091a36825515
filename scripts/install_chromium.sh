#!/bin/sh
# Install Debian's chromium for the headless browser tests (tests/test_other_languages.py).
# Idempotent: does nothing when chromium is already there. Needs root (or sudo) and apt-get;
# prints one line saying why and exits 1 when it cannot install.
#   sh scripts/install_chromium.sh          (CHROMIUM=/path/to/chromium to check another binary)
set -eu
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium: no apt-get on this machine; install chromium yourself" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install_chromium: not root and no password-less sudo; run: apt-get install -y chromium" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
# Another job may be installing packages at the same moment: wait for the dpkg lock, do not fail.
APT="$SUDO apt-get -o DPkg::Lock::Timeout=600 -y -q"
if ! $APT install --no-install-recommends chromium >/dev/null 2>&1; then
    $APT update >/dev/null 2>&1 || true
    if ! $APT install --no-install-recommends chromium >/dev/null 2>&1; then
        echo "install_chromium: apt-get install chromium failed (no package index reachable?)" >&2
        exit 1
    fi
fi
[ -x "$CHROMIUM" ] || { echo "install_chromium: installed, but $CHROMIUM is missing" >&2; exit 1; }
echo "install_chromium: installed $("$CHROMIUM" --version 2>/dev/null | head -n 1)"
