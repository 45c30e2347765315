#!/usr/bin/env bash
# Fresh-machine setup: Debian packages for headless rendering and video decoding, a venv with the
# project and its LIBERO and ManiSkill extras (plus a Vulkan driver for ManiSkill), LIBERO's config file and
# assets. Safe to run again.
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

# ManiSkill3 (SAPIEN) needs a Vulkan device, even for state-only observations. Without an NVIDIA driver that is
# Mesa's lavapipe (CPU Vulkan), and Debian 12's Mesa 22 lacks features SAPIEN uses: Mesa 25 comes from
# bookworm-backports (the suite is added to apt only if missing). sim/maniskill.py sets VK_ICD_FILENAMES to it.
if [ "$(id -u)" = 0 ]; then APT_SUDO=""; else APT_SUDO="sudo"; fi
mesa_version=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || echo 0)
has_nvidia_icd() {  # the driver's ICD file lies in one of the two folders (ls of both fails when one is empty)
  for f in /usr/share/vulkan/icd.d/nvidia*.json /etc/vulkan/icd.d/nvidia*.json; do [ -e "$f" ] && return 0; done
  return 1
}
if has_nvidia_icd; then
  echo "[install] Vulkan: NVIDIA driver found, lavapipe not needed"
elif dpkg -s libvulkan1 >/dev/null 2>&1 && dpkg --compare-versions "$mesa_version" ge 25; then
  echo "[install] Vulkan: lavapipe (Mesa $mesa_version) already installed"
elif grep -qs '^VERSION_CODENAME=bookworm' /etc/os-release; then
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "[install] adding bookworm-backports to apt"
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      | $APT_SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
  fi
  echo "[install] Vulkan: mesa-vulkan-drivers (Mesa 25) from bookworm-backports"
  $APT_SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $APT_SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
else
  echo "[install] Vulkan: mesa-vulkan-drivers and libvulkan1 from this distribution (ManiSkill needs Mesa >= 25)"
  $APT_SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $APT_SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi

PYTHON=${PYTHON:-python3}
# Debian's python3 makes venvs only with python3-venv (ensurepip); minimal images may lack python3 itself
if ! command -v "$PYTHON" >/dev/null 2>&1 || ! "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then
  echo "[install] apt packages: python3 python3-venv"
  $APT_SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $APT_SUDO apt-get install -y -qq python3 python3-venv >/dev/null
fi
# a venv left without pip (created before python3-venv was there) is made again
.venv/bin/python -m pip --version >/dev/null 2>&1 || "$PYTHON" -m venv --clear .venv
.venv/bin/python -m pip install -q --upgrade pip
echo "[install] python packages (first time: torch and friends, a few minutes)"
# ray: `vla sweep --ray` (sharded sweeps on a Ray cluster) and its test; one ~80 MB wheel, ~8 s here
.venv/bin/python -m pip install -q -e ".[libero,maniskill,dev,ray]"

echo "[install] LIBERO config and assets"
MUJOCO_GL=${MUJOCO_GL:-egl} .venv/bin/python -m sim.libero_setup
echo "[install] done"
