#!/bin/sh
# OpenSSH's server (sshd), which the tests start on a loopback port as a real remote host for Ansible's ssh
# connection. Found: nothing to do. Missing: Debian's openssh-server, through apt-install.sh. Installing it may start
# the system's own sshd on port 22 (the package's init script); the tests never use that one, so it is stopped.
set -eu
[ -x /usr/sbin/sshd ] && exit 0
"$(dirname "$0")/apt-install.sh" openssh-server
if [ -f /run/sshd.pid ]; then
    kill "$(cat /run/sshd.pid)" 2>/dev/null || true
fi
