#!/bin/sh
# Make Debian's chromium available for the browser test (tests/test_rest.py) and print its path.
# Installs it with apt-get when missing (as root, or with passwordless sudo); exits 1 with one
# line on stderr saying why when it cannot.
set -u
for name in chromium chromium-browser; do
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; exit 0; fi
done
if ! command -v apt-get >/dev/null 2>&1; then
    echo "cannot install chromium: no apt-get on this machine (install chromium by hand)" >&2; exit 1
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "cannot install chromium: not root and no passwordless sudo (run: sudo apt-get install -y chromium)" >&2
    exit 1
fi
install() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >&2; }
# A cached package list usually suffices; refresh it only when the install fails.
install || { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update >&2 && install; } || {
    echo "cannot install chromium: apt-get install -y chromium failed" >&2; exit 1; }
command -v chromium || { echo "cannot install chromium: installed, but no chromium command" >&2; exit 1; }
