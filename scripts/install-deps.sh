#!/usr/bin/env bash
# Install the Debian packages saefw builds and tests with (root, or through sudo when present).
set -euo pipefail
PACKAGES=(build-essential cmake pkg-config liblua5.4-dev libopenblas-dev libcurl4-openssl-dev
          libcjson-dev libssl-dev libzip-dev libsnappy-dev libzstd-dev zlib1g-dev libpcre2-dev libutf8proc-dev
          python3 chromium fonts-dejavu-core fonts-noto-color-emoji clang-format
          libopenmpi-dev openmpi-bin)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "install-deps: run as root or install sudo" >&2; exit 1; fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
