#!/usr/bin/env bash
# One command from a fresh clone to a running service:
#   ./setup.sh               install what is missing, build environments and the service, then run
#                            it in the foreground (its log on this terminal; Ctrl-C stops it)
#   ./setup.sh --background  the same, but the service runs detached: its log goes to
#                            bubble-sandbox.log, its pid to bubble-sandbox.pid; returns once
#                            /healthz answers (at most 60 s)
#   ./setup.sh --stop        stop the service --background started (SIGTERM: its graceful shutdown)
#   ./setup.sh --no-start    the same as the first, without starting (CI, images)
# SETUP_LOG_FILE and SETUP_PID_FILE name other files for --background and --stop.
# System packages are installed when we are root (or have passwordless sudo); otherwise the
# exact command to run is printed and we stop.
set -euo pipefail
cd "$(dirname "$0")"
MODE=foreground
case "${1:-}" in
  "") ;;
  --no-start) MODE=none ;;
  --background) MODE=background ;;
  --stop) MODE=stop ;;
  -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
  *) echo "usage: ./setup.sh [--no-start | --background | --stop]" >&2; exit 2 ;;
esac
LOG_FILE=${SETUP_LOG_FILE:-$PWD/bubble-sandbox.log}
PID_FILE=${SETUP_PID_FILE:-$PWD/bubble-sandbox.pid}

# The pid in PID_FILE if that process is a `bubble-sandbox serve` that has not exited.
running_pid() {
  local pid state
  pid=$(cat "$PID_FILE" 2>/dev/null || true)
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1 || true)
  if [ -n "$state" ] && [ "$state" != Z ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q 'bubble-sandbox.js serve'; then
    echo "$pid"
  fi
}

stop_service() {
  local pid
  pid=$(running_pid)
  if [ -z "$pid" ]; then
    echo "bubble-sandbox is not running (no live pid in $PID_FILE)"
    rm -f "$PID_FILE"
    return 0
  fi
  echo "Stopping bubble-sandbox (pid $pid): drain, then running executions get their grace period"
  kill -TERM "$pid"
  for _ in $(seq 1 1200); do
    [ -n "$(running_pid)" ] || break
    sleep 0.1
  done
  if [ -n "$(running_pid)" ]; then
    echo "bubble-sandbox (pid $pid) is still stopping after 120 s; see $LOG_FILE" >&2
    return 1
  fi
  rm -f "$PID_FILE"
  echo "bubble-sandbox stopped"
}

if [ "$MODE" = stop ]; then
  stop_service
  exit
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo"; else SUDO="none"; fi
fi

need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
[ -x /usr/bin/python3 ] || need+=(python3)
/usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v setpriv >/dev/null || need+=(util-linux)
# gcc + libc6-dev: build/bubble-sandbox-exec, the compiled step between the service and bwrap, and
# build/bubble-sandbox-spawner, the spawn helper that forks it.
command -v gcc >/dev/null || need+=(gcc)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ -f /usr/lib/aarch64-linux-gnu/libc.a ] || [ -f /usr/lib/libc.a ] || need+=(libc6-dev)
# pyflakes checks the project's Python in npm test.
/usr/bin/python3 -c 'import pyflakes' >/dev/null 2>&1 || need+=(python3-pyflakes)
# Workspace quotas: loop-mounted ext4 images (optional; without them the service runs unquota'd).
command -v mkfs.ext4 >/dev/null || [ -x /sbin/mkfs.ext4 ] || need+=(e2fsprogs)
# Network mode "outbound": slirp4netns, and nftables for the rules that keep the host unreachable from it.
command -v slirp4netns >/dev/null || need+=(slirp4netns)
command -v nft >/dev/null || [ -x /usr/sbin/nft ] || need+=(nftables)
# tmux: the test that drives `bubble-sandbox run bash` in a real terminal.
command -v tmux >/dev/null || need+=(tmux)
# Root filesystems: zstd unpacks .tar.zst imports; mmdebstrap builds one (scripts/build-rootfs.sh).
command -v zstd >/dev/null || need+=(zstd)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$SUDO" = none ]; then
    echo "Missing system packages. Run: sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "Installing system packages: ${need[*]}"
  $SUDO apt-get update -q >/dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi

# The range package.json's engines names (^20.19.0 || >=22.13.0 as of writing), not just a major.
if ! bash scripts/check-node.sh; then
  echo "Install a current Node.js LTS (see the README's Quick start), then run ./setup.sh again." >&2
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
  # sudo resets PATH: keep ours, so a Node outside /usr/bin (nvm, /usr/local, /opt) is found.
  $SUDO env PATH="$PATH" bash scripts/build-environments.sh
fi
npm run build --silent
# The exec helper every sandbox starts through; the service refuses to start without it.
bash scripts/build-exec-helper.sh
# promtool (from Debian's prometheus package, the binary only) for the metrics test of npm test.
[ "$SUDO" = none ] || bash scripts/install-promtool.sh || echo "promtool could not be installed: the metrics format test will be skipped" >&2
[ -f .env ] || cp .env.example .env

node bin/bubble-sandbox.js check || {
  echo "The sandbox probe failed: see the reason above. The service starts, but /readyz will report it." >&2
}

# Whether GET /healthz on HOST:PORT answers 200 (bash's /dev/tcp: no curl needed).
healthz() {
  local status
  status=$( (exec 3<>"/dev/tcp/$1/$2" && printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\n\r\n' "$1" >&3 && timeout 2 head -n 1 <&3) 2>/dev/null) || return 1
  [[ "$status" == *" 200 "* ]]
}

start_background() {
  local pid offset url host port deadline=$((SECONDS + 60))
  if [ -n "$(running_pid)" ]; then
    echo "bubble-sandbox already runs (pid $(running_pid)); ./setup.sh --stop stops it" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$LOG_FILE")" "$(dirname "$PID_FILE")"
  offset=$(stat -c %s "$LOG_FILE" 2>/dev/null || echo 0)
  # A session of its own (setsid), so closing this terminal does not stop it. Without job
  # control this shell's child leads no process group, so setsid execs node in place: $! is
  # the service's own pid and a SIGTERM to it reaches its graceful shutdown.
  setsid node bin/bubble-sandbox.js serve </dev/null >>"$LOG_FILE" 2>&1 &
  pid=$!
  echo "$pid" >"$PID_FILE"
  while [ "$SECONDS" -lt "$deadline" ]; do
    if [ -z "$(running_pid)" ]; then
      echo "bubble-sandbox stopped while starting; the end of $LOG_FILE:" >&2
      tail -c +$((offset + 1)) "$LOG_FILE" | tail -n 5 >&2
      rm -f "$PID_FILE"
      exit 1
    fi
    # Where it listens, from its own "Server listening at" line (so .env and the environment agree).
    url=$(tail -c +$((offset + 1)) "$LOG_FILE" | grep -o 'Server listening at http://[^"]*' | head -n 1 | sed 's|.*http://||' || true)
    if [ -n "$url" ]; then
      host=${url%:*}
      host=${host#[}
      host=${host%]}
      port=${url##*:}
      if healthz "$host" "$port"; then
        echo "bubble-sandbox runs in the background at http://$url (pid $pid)"
        echo "  log: $LOG_FILE    stop: ./setup.sh --stop  (or: kill \$(cat $PID_FILE))"
        exit 0
      fi
    fi
    sleep 0.2
  done
  echo "bubble-sandbox did not answer /healthz within 60 s; stopping it. The end of $LOG_FILE:" >&2
  tail -c +$((offset + 1)) "$LOG_FILE" | tail -n 5 >&2
  stop_service >&2 || true
  exit 1
}

case "$MODE" in
  background) start_background ;;
  foreground)
    echo "Starting bubble-sandbox in the foreground: Ctrl-C stops it. Run npm test in a second terminal;"
    echo "./setup.sh --background starts it detached instead."
    # exec, not `npm start`: the service itself gets this pid, so a SIGTERM sent to it (by a
    # supervisor, or kill) reaches the service and its graceful shutdown, not a wrapper shell.
    exec node bin/bubble-sandbox.js serve
    ;;
esac
