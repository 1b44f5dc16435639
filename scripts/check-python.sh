#!/usr/bin/env bash
# The Python of the project (what runs in sandboxes and beside the service, the test fixtures and
# scripts) checked as Python: every file must parse for the host's python3 (compiled in memory, no
# __pycache__ left), and pyflakes (Debian's python3-pyflakes, installed by setup and CI) must
# find nothing. Part of npm test.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files -co --exclude-standard -- '*.py' | grep -v '^environments/' | sort)
[ ${#files[@]} -gt 0 ] || { echo "check-python: no Python files found" >&2; exit 1; }
/usr/bin/python3 - "${files[@]}" <<'PY'
import sys
bad = 0
for name in sys.argv[1:]:
    try:
        with open(name, 'rb') as f:
            compile(f.read(), name, 'exec', dont_inherit=True)
    except SyntaxError as e:
        print(f'{name}:{e.lineno}: {e.msg}', file=sys.stderr)
        bad += 1
sys.exit(1 if bad else 0)
PY
if /usr/bin/python3 -c 'import pyflakes' 2>/dev/null; then
  /usr/bin/python3 -m pyflakes "${files[@]}"
elif [ -n "${CI:-}" ]; then
  echo "check-python: pyflakes is missing (apt-get install python3-pyflakes)" >&2
  exit 1
else
  echo "check-python: pyflakes not installed, syntax checked only (apt-get install python3-pyflakes)" >&2
fi
echo "check-python: ${#files[@]} files"
