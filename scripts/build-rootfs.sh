#!/usr/bin/env bash
# Builds the default sandbox root filesystem without Docker: the same userland as
# Dockerfile.rootfs (Debian bookworm, Python 3, bash, coreutils, curl, ripgrep, git, numpy,
# pandas, requests, httpx, pillow, user `sandbox` uid 1000 with an empty home), from Debian's
# packages with mmdebstrap, as an archive `bubble-sandbox rootfs import` takes.
#
#   scripts/build-rootfs.sh [--minimal] [--mirror URL] OUTPUT.tar[.zst|.gz|.xz]
#
# --minimal: the same recipe with only python3, pip and bash on top of the base system (what CI
# builds on every run; the full set takes minutes). mmdebstrap runs in its `root` mode when we
# are root and `unshare` mode otherwise; the output archive is written by mmdebstrap itself.
set -euo pipefail

variant=full
mirror=http://deb.debian.org/debian
suite=bookworm
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --minimal) variant=minimal ;;
    --mirror) mirror="$2"; shift ;;
    --suite) suite="$2"; shift ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    -*) echo "build-rootfs: unknown option $1" >&2; exit 2 ;;
    *) out="$1" ;;
  esac
  shift
done
[ -n "$out" ] || { echo "usage: scripts/build-rootfs.sh [--minimal] OUTPUT.tar[.zst|.gz|.xz]" >&2; exit 2; }
command -v mmdebstrap >/dev/null || { echo "build-rootfs: mmdebstrap is not installed (apt-get install mmdebstrap)" >&2; exit 1; }

# Keep in step with Dockerfile.rootfs.
packages=(python3 python3-pip bash coreutils ca-certificates)
if [ "$variant" = full ]; then
  packages+=(curl ripgrep git python3-venv python3-numpy python3-pandas python3-requests python3-httpx python3-pil)
fi

mode=root
[ "$(id -u)" = 0 ] || mode=unshare

# The customize hooks run on the host against the new tree ($1): the sandbox user with an empty
# home, apt able to run as root of a user namespace where only one uid is mapped (its sandbox
# user _apt cannot be switched to there), /etc/hosts and /etc/hostname (no installer wrote them,
# and `localhost` must resolve inside), and an os-release marker of what built it.
mkdir -p "$(dirname "$out")"
mmdebstrap --mode="$mode" --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" \
  --aptopt='Acquire::Languages "none"' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='chroot "$1" useradd --uid 1000 --user-group --create-home --shell /bin/bash sandbox' \
  --customize-hook='find "$1/home/sandbox" -mindepth 1 -delete' \
  --customize-hook='echo "APT::Sandbox::User \"root\";" > "$1/etc/apt/apt.conf.d/90bubble-sandbox"' \
  --customize-hook='printf "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n" > "$1/etc/hosts"' \
  --customize-hook='echo sandbox > "$1/etc/hostname"' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  --customize-hook="echo 'BUBBLE_SANDBOX_ROOTFS=$variant' >> \"\$1/etc/os-release\"" \
  "$suite" "$out" "$mirror"
echo "build-rootfs: wrote $out ($(du -h "$out" | cut -f1), variant $variant)"
