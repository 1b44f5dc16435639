#!/usr/bin/env bash
# Compiles the two C programs of src/sandbox/exec-helper into build/, both statically linked so
# they need no loader or library at run time, each rebuilt only when its source is newer:
#   bubble-sandbox-exec.c    -> build/bubble-sandbox-exec (the step between the service and bwrap:
#                               rlimits, cgroup join, netns join, identity drop, no_new_privs, empty
#                               environment), where BUBBLE_SANDBOX_EXEC_HELPER_PATH points by default;
#   bubble-sandbox-spawner.c -> bubble-sandbox-spawner beside it (the spawn helper: forks and execs
#                               the exec helper for the service, see src/sandbox/spawner.ts).
# Usage: scripts/build-exec-helper.sh [OUTPUT]   (OUTPUT: the exec helper; the spawner goes beside it)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/bubble-sandbox-exec}
build() {
  local src=$1 bin=$2
  if [ -x "$bin" ] && [ "$bin" -nt "$src" ]; then return 0; fi
  if ! command -v "${CC:-gcc}" >/dev/null; then
    echo "build-exec-helper: ${CC:-gcc} not found (install gcc and libc6-dev): the service cannot start sandboxes without $bin" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$bin")"
  local tmp="$bin.tmp.$$"
  "${CC:-gcc}" -std=c11 -O2 -Wall -Wextra -Werror -D_FORTIFY_SOURCE=2 -fstack-protector-strong -static -o "$tmp" "$src"
  chmod 0755 "$tmp"
  mv -f "$tmp" "$bin"
  echo "build-exec-helper: built $bin"
}
build src/sandbox/exec-helper/bubble-sandbox-exec.c "$out"
build src/sandbox/exec-helper/bubble-sandbox-spawner.c "$(dirname "$out")/bubble-sandbox-spawner"
