#!/usr/bin/env bash
# The GPU checks, in one run on the lent GPU machine (the `device` tool), from the repo root:
#   run(command="bash .device/check.sh", carry=[".device/build"], timeout_s=580)
# needs `bash .device/bundle.sh` run here first (the packages and Vulkan loaders that machine lacks).
# Stages, each time-boxed, each logged to $OUT/check.log (what comes back: at most 8 files):
#   1. ManiSkill's GPU simulation: build N = 8 PickCube envs, step and render once (fails fast, says why)
#   2. `vla bench --only maniskill,rl_maniskill`: env frames/s for N = 1, 64, 512 (state, RGB) and RL rollout
#      frames/s with rl.batched_envs = 64, 256, 512 -> $OUT/bench/results.md (issue 6's GPU rows)
#   3. if .device/build/ckpt holds a ManiSkill BC checkpoint: `vla rl` with GPU-parallel rollouts
#      (RL_ARGS), before/after evaluation on CPU-sim workers rendering on the GPU -> $OUT/rl_*
set -uo pipefail
OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/check.log") 2>&1
stage() { echo; echo "=== $(date +%T) $*"; }
stage "setup"
for f in .device/build/gl/*.deb; do dpkg -x "$f" /; done
ldconfig
python3 -c "import tarfile; tarfile.open('.device/build/site.tar.xz').extractall('/tmp', filter='data')" || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
NV=/usr/local/nvidia/share
[ -f $NV/vulkan/icd.d/nvidia_icd.json ] && export VK_ICD_FILENAMES=$NV/vulkan/icd.d/nvidia_icd.json \
  VK_DRIVER_FILES=$NV/vulkan/icd.d/nvidia_icd.json __EGL_VENDOR_LIBRARY_FILENAMES=$NV/glvnd/egl_vendor.d/10_nvidia.json
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
# SAPIEN's PhysX GPU library, where SAPIEN looks for it (it would download it: this machine has no internet)
if [ -f .device/build/physx-linux-so.zip ]; then
  PHYSX_DIR=$HOME/.sapien/physx/$(python3 -c "from sapien import physx; print(physx.version())")
  mkdir -p "$PHYSX_DIR" && python3 -m zipfile -e .device/build/physx-linux-so.zip "$PHYSX_DIR" && ls "$PHYSX_DIR"
fi

stage "1. ManiSkill GPU simulation, N = 8"
timeout 180 python3 - <<'PY' || { echo "stage 1 failed: the rest needs it"; exit 1; }
import time, torch
from sim.maniskill import ManiSkillBatch
tic = time.perf_counter()
b = ManiSkillBatch(0, 8, 128, "gpu")
b.reset(list(range(8)))
r, s = b.step(torch.zeros(8, 7))
img = b.images()
print(f"built + reset + step + render in {time.perf_counter() - tic:.1f} s: images {tuple(img.shape)} on {img.device}, "
      f"state {tuple(b.state().shape)}, mean pixel {img.float().mean():.1f}")
b.close()
PY

stage "2. make bench, ManiSkill sections"
timeout ${BENCH_S:-300} python3 -m vla.cli bench --out "$OUT/bench" --only maniskill,rl_maniskill

if [ -f .device/build/ckpt/model.safetensors ]; then
  stage "3. vla rl, GPU-parallel rollouts"
  rm -rf /tmp/rl_gpu
  timeout ${RL_S:-240} python3 -m vla.cli rl --policy "$(python3 -c "import json; print(json.load(open('.device/build/ckpt/config.json'))['policy'])")" \
    --sim maniskill --ckpt .device/build/ckpt output_dir=/tmp/rl_gpu rl.workers=14 ${RL_ARGS:-rl.batched_envs=256 \
    rl.episodes_per_iter=256 rl.iterations=2 rl.eval_episodes_per_task=20}
  for f in rl_log.jsonl rl_summary.json report.md; do cp /tmp/rl_gpu/$f "$OUT/rl_$f" 2>/dev/null; done
fi
stage "done"
