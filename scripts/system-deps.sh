#!/usr/bin/env bash
# Debian packages the tests need (promtool from `prometheus`). Installs them when run as root and
# they are missing; otherwise says what is missing. Safe to run again.
set -euo pipefail
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ "${#need[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${need[*]}; install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The package may start a server; the tests only need its promtool.
pkill -x prometheus 2>/dev/null || true
