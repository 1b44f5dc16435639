#!/usr/bin/env bash
# Puts promtool (Prometheus' metrics checker, used by the metrics test) at .tools/bin/promtool
# when it is not on PATH: takes only that one binary out of Debian's prometheus package, so no
# Prometheus server is installed or started. Needs apt (Debian/Ubuntu); prints why when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v promtool >/dev/null && exit 0
[ -x .tools/bin/promtool ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download prometheus >/dev/null 2>&1) || {
  apt-get update -q >/dev/null 2>&1 || true
  (cd "$work" && apt-get download prometheus >/dev/null) || { echo "install-promtool: apt-get download prometheus failed" >&2; exit 1; }
}
dpkg-deb --fsys-tarfile "$work"/prometheus_*.deb | tar -x -C "$work" ./usr/bin/promtool
mkdir -p .tools/bin
mv "$work/usr/bin/promtool" .tools/bin/promtool
echo "install-promtool: .tools/bin/promtool"
