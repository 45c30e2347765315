#!/usr/bin/env bash
# Builds, on a machine with PyPI and Debian's archive, what the lent GPU machine (see the `device` tool: Python
# 3.12, torch, transformers, no internet) lacks to run ManiSkill's GPU simulation and this project's GPU checks:
#   .device/build/site.tar.xz   python 3.12 packages (mani_skill, sapien, gymnasium and their imports), pruned
#                               to what PickCube-class tasks load, so that the carried tree stays under 64 MiB
#   .device/build/gl/*.deb      the Vulkan / EGL loaders (the NVIDIA driver itself is mounted there)
#   .device/build/ckpt/         with CKPT=<checkpoint dir>: its weights, config and stats (no optimizer state),
#                               for check.sh's RL stage
# Then `.device/check.sh` runs there with `carry: [".device/build"]`.
set -euo pipefail
cd "$(dirname "$0")/.."
B=.device/build
PY=${PYTHON:-python3}
rm -rf "$B" && mkdir -p "$B/wheels" "$B/site" "$B/gl"
PLAT=(--python-version 3.12 --implementation cp --only-binary=:all:
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# what `import mani_skill.envs` and building a PickCube ManiSkillBatch import, minus what that machine has
PKGS=(mani_skill==3.0.1 sapien==3.0.3 gymnasium==1.4.0 farama-notifications dacite defusedxml dill glfw
      mujoco==3.8.1 pytorch-kinematics==0.7.6 arm-pytorch-utilities pytorch-seed transforms3d trimesh==5.2.0
      tyro==1.0.17 docstring-parser typeguard pyperclip
      ipython==9.18.1 ipython-pygments-lexers traitlets decorator jedi parso matplotlib-inline pexpect ptyprocess
      prompt_toolkit wcwidth stack_data asttokens executing pure_eval)
"$PY" -m pip download -q --no-deps "${PLAT[@]}" -d "$B/wheels" "${PKGS[@]}"
"$PY" -m pip install -q --no-deps --no-compile "${PLAT[@]}" --target "$B/site" "$B"/wheels/*.whl
S=$B/site
# mani_skill: keep the Panda's meshes (panda, panda_wristcam) and the code; the other robots
# (panda_v3.urdf, the wristcam Panda, uses the RealSense D415's mesh only), the big scenes and the HDR
# environment maps are for tasks and renders the checks do not use
P=$S/mani_skill/assets/robots/panda
find "$S/mani_skill/assets/robots" -mindepth 1 -maxdepth 1 ! -name panda -exec rm -rf {} +
find "$P/realsense2_description" -type f ! -name d415.stl -delete
rm -rf "$P/sciurus17_description" "$S/mani_skill/assets/maniskill2-scene-2.glb" "$S/mani_skill/assets/environment_maps" \
  "$S/mani_skill/examples" "$S/mani_skill/utils/scene_builder/replicacad/autumn_field_puresky_4k.hdr"
# IPython (which mani_skill imports) runs without jedi, its optional completion engine
rm -rf "$S/jedi"
# sapien: C++ headers and the ray-tracing denoiser are for building plugins and ray-traced renders
rm -rf "$S/sapien/include" "$S/sapien/oidn_library"
find "$S" -name "__pycache__" -prune -exec rm -rf {} + ; rm -rf "$S"/*.dist-info/RECORD "$S/bin"
tar -cJf "$B/site.tar.xz" -C "$B" site
rm -rf "$B/wheels" "$S"
# the Vulkan and EGL loaders, as the device tool's notes say (amd64, unpacked there with dpkg -x)
mkdir -p /tmp/amd64/partial
o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
if apt-get "${o[@]}" update -qq 2>/dev/null; then
  (cd "$B/gl" && apt-get "${o[@]}" download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
else
  echo "apt-get update failed (not root?): fetch the loaders with: sudo $0" >&2
fi
# SAPIEN's PhysX GPU library: no wheel ships it, SAPIEN downloads it from GitHub on first GPU use, and neither
# machine reaches GitHub; PHYSX_ZIP=<physx-precompiled's linux-so.zip for sapien 3.0.3's PhysX> carries it
# (default: ../shared/physx/linux-so.zip when someone has put it there)
PHYSX_ZIP=${PHYSX_ZIP:-../shared/physx/linux-so.zip}
if [ -f "$PHYSX_ZIP" ]; then cp "$PHYSX_ZIP" "$B/physx-linux-so.zip"
else echo "no PhysX GPU library ($PHYSX_ZIP): check.sh's stage 1 will say what is missing" >&2; fi
if [ -n "${CKPT:-}" ]; then
  mkdir -p "$B/ckpt" && cp "$CKPT"/{config.json,meta.json,model.safetensors,norm_stats.safetensors} "$B/ckpt/"
fi
du -sh "$B"/*
