#!/usr/bin/env bash
# Fresh-machine setup: Debian packages for headless rendering and video decoding, a venv with the
# project and its LIBERO extra, LIBERO's config file and assets. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="ffmpeg libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 zstd"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "[install] apt packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
echo "[install] python packages (first time: torch and friends, a few minutes)"
.venv/bin/python -m pip install -q -e ".[libero,dev]"

echo "[install] LIBERO config and assets"
MUJOCO_GL=${MUJOCO_GL:-egl} .venv/bin/python -m sim.libero_setup
echo "[install] done"
