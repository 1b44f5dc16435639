#!/usr/bin/env bash
# Compiles src/sandbox/exec-helper/bubble-sandbox-exec.c (the step between the service and bwrap:
# rlimits, cgroup join, netns join, identity drop, no_new_privs, empty environment) into
# build/bubble-sandbox-exec, where BUBBLE_SANDBOX_EXEC_HELPER_PATH points by default. Statically
# linked, so it needs no loader or library at run time. Rebuilt only when the source is newer.
# Usage: scripts/build-exec-helper.sh [OUTPUT]
set -euo pipefail
cd "$(dirname "$0")/.."
src=src/sandbox/exec-helper/bubble-sandbox-exec.c
out=${1:-build/bubble-sandbox-exec}
if [ -x "$out" ] && [ "$out" -nt "$src" ]; then exit 0; fi
if ! command -v "${CC:-gcc}" >/dev/null; then
  echo "build-exec-helper: ${CC:-gcc} not found (install gcc and libc6-dev): the service cannot start sandboxes without $out" >&2
  exit 1
fi
mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
"${CC:-gcc}" -std=c11 -O2 -Wall -Wextra -Werror -D_FORTIFY_SOURCE=2 -fstack-protector-strong -static -o "$tmp" "$src"
chmod 0755 "$tmp"
mv -f "$tmp" "$out"
echo "build-exec-helper: built $out"
