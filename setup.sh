#!/usr/bin/env bash
# One command from a fresh clone to a running service:
#   ./setup.sh              install what is missing, build environments and the service, start it
#   ./setup.sh --no-start   the same, without starting (CI, images)
# System packages are installed when we are root (or have passwordless sudo); otherwise the
# exact command to run is printed and we stop.
set -euo pipefail
cd "$(dirname "$0")"
START=1
[ "${1:-}" = "--no-start" ] && START=0

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo"; else SUDO="none"; fi
fi

need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
[ -x /usr/bin/python3 ] || need+=(python3)
/usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v setpriv >/dev/null || need+=(util-linux)
# pyflakes checks the project's Python in npm test.
/usr/bin/python3 -c 'import pyflakes' >/dev/null 2>&1 || need+=(python3-pyflakes)
# Workspace quotas: loop-mounted ext4 images (optional; without them the service runs unquota'd).
command -v mkfs.ext4 >/dev/null || [ -x /sbin/mkfs.ext4 ] || need+=(e2fsprogs)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$SUDO" = none ]; then
    echo "Missing system packages. Run: sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "Installing system packages: ${need[*]}"
  $SUDO apt-get update -q >/dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi

if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "Node.js 20 or newer is required (found: $(node --version 2>/dev/null || echo none))." >&2
  echo "Install it from your distribution or nodejs.org, then run ./setup.sh again." >&2
  exit 1
fi

# Sandboxes run as unprivileged uids and bwrap mounts the environments and workspaces by path, so
# every directory above the project must be traversable by others (o+x: enter, not list). A
# checkout under a 0700 directory (mktemp -d, a private home) would fail every execution.
dir="$(pwd -P)"
while [ "$dir" != "/" ]; do
  if [ "$(( 0$(stat -c %a "$dir") & 01 ))" -eq 0 ]; then
    if [ "$SUDO" = none ] && [ "$(stat -c %u "$dir")" != "$(id -u)" ]; then
      echo "The sandbox user cannot reach $dir. Run: sudo chmod o+x '$dir'" >&2
      exit 1
    fi
    echo "Making $dir traversable (chmod o+x) so sandboxes can reach the project"
    ${SUDO/none/} chmod o+x "$dir"
  fi
  dir="$(dirname "$dir")"
done

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
if [ "$SUDO" = none ]; then
  bash scripts/build-environments.sh
else
  $SUDO bash scripts/build-environments.sh
fi
npm run build --silent
# promtool (from Debian's prometheus package, the binary only) for the metrics test of npm test.
[ "$SUDO" = none ] || bash scripts/install-promtool.sh || echo "promtool could not be installed: the metrics format test will be skipped" >&2
[ -f .env ] || cp .env.example .env

node bin/bubble-sandbox.js check || {
  echo "The sandbox probe failed: see the reason above. The service starts, but /readyz will report it." >&2
}
if [ "$START" = 1 ]; then
  # exec, not `npm start`: the service itself gets this pid, so a SIGTERM sent to it (by a
  # supervisor, or kill) reaches the service and its graceful shutdown, not a wrapper shell.
  exec node bin/bubble-sandbox.js serve
fi
