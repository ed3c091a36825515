#!/bin/sh
# Make Debian's Fashion-MNIST (package dataset-fashion-mnist: the original IDX files, 60,000 train +
# 10,000 test, gzipped) available and print the folder holding them, for
# `--dataset fashion-mnist --data-root "$(sh scripts/ensure_fashion_mnist.sh)"`.
# Installs the package with apt-get when missing (as root, or with passwordless sudo); exits 1 with
# one line on stderr saying why when it cannot. Idempotent.
set -u
PACKAGE=dataset-fashion-mnist
MARKER=train-images-idx3-ubyte
# The folder of the package's files that holds the training images (plain or .gz).
find_root() {
    dpkg -L "$PACKAGE" 2>/dev/null | grep -E "/$MARKER(\.gz)?$" | head -n 1 | xargs -r dirname
}
root=$(find_root)
if [ -n "$root" ]; then echo "$root"; exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "cannot install $PACKAGE: no apt-get on this machine (put the Fashion-MNIST IDX files in a folder by hand)" >&2
    exit 1
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "cannot install $PACKAGE: not root and no passwordless sudo (run: sudo apt-get install -y $PACKAGE)" >&2
    exit 1
fi
install() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$PACKAGE" >&2; }
# A cached package list usually suffices; refresh it only when the install fails.
install || { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update >&2 && install; } || {
    echo "cannot install $PACKAGE: apt-get install -y $PACKAGE failed" >&2; exit 1; }
root=$(find_root)
[ -n "$root" ] || { echo "cannot find $MARKER in the files of $PACKAGE (dpkg -L $PACKAGE)" >&2; exit 1; }
echo "$root"
