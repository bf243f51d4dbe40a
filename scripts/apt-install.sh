#!/bin/sh
# Install Debian packages the tests or checks need (as root, as on a fresh CI machine); otherwise say what to run.
set -eu
if [ "$(id -u)" != 0 ]; then
    echo "missing system package(s): $*; install them with: sudo apt-get install $*" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing system package(s): $*; no apt-get here: install them with your package manager" >&2
    exit 1
fi
echo "installing $* (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$@" >/dev/null
