#!/bin/sh
# bubblewrap (bwrap), the sandbox infra/sandbox.py runs every command on model-written code in.
# Found on PATH: nothing to do. Missing: Debian's bubblewrap package, through apt-install.sh.
set -eu
command -v bwrap >/dev/null 2>&1 && exit 0
exec "$(dirname "$0")/apt-install.sh" bubblewrap
