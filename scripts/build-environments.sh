#!/usr/bin/env bash
# Builds environments/<name>/.venv for every environment from its pyproject.toml.
# With a reachable package index the dependencies are installed with pip (or uv); without one
# (CI machines, air-gapped hosts) the venv uses the system's site packages, and the Debian
# packages listed under [tool.bubble-sandbox] debian-packages are installed when we may.
# The venv is always built from /usr/bin/python3: the sandbox mounts /usr, not /root or /opt.
# The lists come from scripts/read-pyproject.mjs, a real TOML parser (so npm ci comes first).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
ENV_DIR=${BUBBLE_SANDBOX_ENVIRONMENTS_DIR:-environments}
FORCE=${FORCE_REBUILD:-0}

[ -x "$PY" ] || { echo "error: $PY is missing (apt-get install -y python3 python3-venv)" >&2; exit 1; }

index_reachable() {
  timeout 8 "$PY" - <<'PYEOF' >/dev/null 2>&1
import urllib.request
urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=6).read(1)
PYEOF
}

command -v node >/dev/null || { echo "error: node is not on PATH (under sudo: sudo env PATH=\"\$PATH\" bash scripts/build-environments.sh)" >&2; exit 1; }

toml_list() { # toml_list <file> <list>: the items of a list of the pyproject.toml, one a line
  node scripts/read-pyproject.mjs "$1" "$2"
}

ONLINE=""
for dir in "$ENV_DIR"/*/; do
  dir=${dir%/}
  name=$(basename "$dir")
  [ -f "$dir/pyproject.toml" ] || continue
  # Read first, then split: a malformed file must stop the build, which `< <(...)` would hide.
  dep_lines=$(toml_list "$dir/pyproject.toml" dependencies)
  deb_lines=$(toml_list "$dir/pyproject.toml" debian-packages)
  mapfile -t deps < <(printf '%s' "$dep_lines")
  mapfile -t debs < <(printf '%s' "$deb_lines")
  stamp="$dir/.venv/.bubble-sandbox-built"
  if [ "$FORCE" != 1 ] && [ -f "$stamp" ] && [ "$stamp" -nt "$dir/pyproject.toml" ]; then
    echo "environment $name: up to date"
    continue
  fi
  rm -rf "$dir/.venv"
  if [ ${#deps[@]} -eq 0 ]; then
    "$PY" -m venv --without-pip "$dir/.venv"
  else
    [ -n "$ONLINE" ] || { if index_reachable; then ONLINE=yes; else ONLINE=no; fi; }
    if [ "$ONLINE" = yes ]; then
      "$PY" -m venv "$dir/.venv"
      "$dir/.venv/bin/python" -m pip install --quiet --disable-pip-version-check "${deps[@]}"
    else
      missing=()
      for deb in "${debs[@]}"; do dpkg -s "$deb" >/dev/null 2>&1 || missing+=("$deb"); done
      if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
          apt-get install -y -q "${missing[@]}" >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
        else
          echo "error: environment $name needs: sudo apt-get install -y ${missing[*]}" >&2
          exit 1
        fi
      fi
      "$PY" -m venv --without-pip --system-site-packages "$dir/.venv"
    fi
  fi
  for dep in "${deps[@]}"; do
    [[ "$dep" == *";"* ]] && continue # an environment marker may leave it out on this Python
    mod=$(echo "$dep" | sed -E 's/[<>=!~;[ ].*//; s/-/_/g')
    "$dir/.venv/bin/python" -c "import $mod" || { echo "error: environment $name cannot import $mod" >&2; exit 1; }
  done
  touch "$stamp"
  echo "environment $name: built (${deps[*]:-standard library only})"
done
