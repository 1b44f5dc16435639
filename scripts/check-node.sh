#!/usr/bin/env bash
# Whether a Node.js version is one package.json's engines.node admits, before npm ci (so without
# semver): bash scripts/check-node.sh [VERSION]; VERSION defaults to the `node` on PATH. Exit 0
# when it is, 1 with a message when not. Reads the range forms engines uses: alternatives joined
# by ||, each made of ^X.Y.Z, ~X.Y.Z, >=, >, <=, < or = X.Y.Z (test/unit/node-version.test.ts
# checks it against semver).
set -euo pipefail
set -f # the range is split into words below: never as file names
cd "$(dirname "$0")/.."

required="$(sed -n 's/^ *"node": *"\([^"]*\)".*/\1/p' package.json | head -n 1)"
if [ -z "$required" ]; then
  echo "package.json has no engines.node" >&2
  exit 1
fi
version="${1:-}"
if [ -z "$version" ]; then
  if ! command -v node >/dev/null; then
    echo "Node.js $required is required (package.json engines); none is installed." >&2
    exit 1
  fi
  version="$(node -p process.versions.node)"
fi

# X.Y.Z as one comparable number.
key() {
  local IFS=. major minor patch
  read -r major minor patch <<<"${1%%-*}"
  echo $(( ${major:-0} * 1000000 + ${minor:-0} * 1000 + ${patch:-0} ))
}

# One comparator ("^20.19.0", ">=22.13.0", ...) against $version.
satisfies() {
  local op="${1%%[0-9]*}" v="${1#"${1%%[0-9]*}"}" have want major minor
  have="$(key "$version")"
  want="$(key "$v")"
  IFS=. read -r major minor _ <<<"$v"
  case "$op" in
    '^') [ "$have" -ge "$want" ] && [ "$have" -lt "$(key "$(( major + 1 )).0.0")" ] ;;
    '~') [ "$have" -ge "$want" ] && [ "$have" -lt "$(key "$major.$(( minor + 1 )).0")" ] ;;
    '>=') [ "$have" -ge "$want" ] ;;
    '>') [ "$have" -gt "$want" ] ;;
    '<=') [ "$have" -le "$want" ] ;;
    '<') [ "$have" -lt "$want" ] ;;
    '=' | '') [ "$have" -eq "$want" ] ;;
    *) echo "scripts/check-node.sh cannot read the engines range '$required'" >&2; exit 1 ;;
  esac
}

alternatives="${required//||/$'\n'}"
while IFS= read -r alternative; do
  all=1
  for comparator in $alternative; do
    satisfies "$comparator" || { all=0; break; }
  done
  [ "$all" = 1 ] && exit 0
done <<<"$alternatives"
echo "Node.js $version is not supported: bubble-sandbox needs $required (package.json engines)." >&2
exit 1
