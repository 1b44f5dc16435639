#!/usr/bin/env bash
# Proves the full recipe of scripts/build-rootfs.sh (CI builds only --minimal on every run):
# builds it, imports it into a throw-away workspace dir and checks, inside a real sandbox, every
# item Dockerfile.rootfs promises. Takes a few minutes and needs the Debian mirror; as root.
#   npm run check:rootfs-full        (or: bash scripts/check-rootfs-full.sh [ARCHIVE])
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
chmod 711 "$work"
trap 'rm -rf "$work"' EXIT
archive="${1:-$work/rootfs-full.tar.zst}"
if [ ! -f "$archive" ]; then
  start=$(date +%s)
  bash scripts/build-rootfs.sh "$archive"
  echo "check-rootfs-full: built in $(( $(date +%s) - start )) s, $(du -h "$archive" | cut -f1)"
fi
export BUBBLE_SANDBOX_WORKSPACE_DIR="$work/ws"
node bin/bubble-sandbox.js rootfs import full "$archive"
node bin/bubble-sandbox.js exec-command -e full --agent '
set -e
. /etc/os-release; echo "os: $PRETTY_NAME"
python3 -c "import numpy, pandas, requests, httpx, PIL; print(\"python:\", numpy.__version__, pandas.__version__, requests.__version__, httpx.__version__, PIL.__version__)"
bash --version | sed -n 1p
ls --version | sed -n 1p
curl --version | sed -n 1p
rg --version | sed -n 1p
git --version
test "$(id -u sandbox)" = 1000 && test "$(id -un)" = sandbox && echo "user: sandbox (1000)"
test -z "$(ls -A /home/sandbox)" && echo "home: empty"
test ! -e /usr/share/doc/bubblewrap && echo "host /usr: not visible"
'
echo "check-rootfs-full: ok"
