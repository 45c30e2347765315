"""ManiSkill3 behind `sim.base.Env`: asset-free tabletop tasks, LIBERO's action/state/camera conventions.

What the toolkit sees is what it sees from LIBERO:
- actions: 7-dim, delta end-effector position (3) + delta rotation as world-frame axis-angle (3) + gripper
  (-1 open, +1 close), each clipped to [-1, 1]. Underneath is ManiSkill's `pd_ee_delta_pose` controller: one
  unit is 0.1 m / 0.1 rad (ManiSkill's own scale; LIBERO's OSC is 0.05 m / 0.5 rad), the rotation is converted
  from world-frame axis-angle to the controller's XYZ Euler delta (root-aligned; measured to turn the TCP the
  opposite way, so it is negated), and the gripper sign is flipped (ManiSkill: +1 open).
- state (8): TCP position (3) + TCP orientation as axis-angle (3, LIBERO's formula) + the two finger joints (2).
- cameras: `agentview` = the task's `base_camera`, `wrist` = the Panda wrist camera (robot `panda_wristcam`),
  upright, uint8, square at `image_size`.
- success: the env's own `success`; reward is ManiSkill's sparse reward (1 on success), or with
  `reward="dense"` (RL only) its `normalized_dense` reward (in [0, 1] per step, 1 on success) divided by the
  episode's max steps, with the success step also credited the steps the episode had left
  (`dense_step_reward`): an episode's return is then in [0, 1] like the sparse one (a critic regressing
  returns of 15-45 barely moves at RL's learning rates), and since the episode ends at success, without the
  credit a policy that hovers just short of success, earning ~0.5 per step until the time limit, would
  out-earn one that succeeds.
- init states: index i is the seeded reset `seed * 100_000 + i` (reproducible; 50 indexed per task by
  convention, like LIBERO's fixed init states, but any index works).

`ManiSkillBatch` holds N envs of one task in one process: ManiSkill's GPU-parallel simulation when CUDA is
present (`backend="gpu"`, tensors stay on the GPU), its CPU simulation otherwise (one env per process there;
`sim.maniskill_vector.make_vector_env` puts N of them in worker processes). `ManiSkillEnv` is one CPU env
behind the Env protocol, which the eval/RL worker processes run.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sim.base import ACTION_SCALES, Observation, StepResult, check_reward_mode

SUITE = "maniskill"
ACTION_DIM = 7
STATE_DIM = 8
POS_SCALE, ROT_SCALE = ACTION_SCALES["maniskill"]  # metres, radians per action unit (pd_ee_delta_pose bounds)
NUM_INIT_STATES = 50  # indexed init states per task by convention (eval/RL sample from these)
CAMERAS = {"agentview": "base_camera", "wrist": "hand_camera"}  # our name -> ManiSkill sensor uid
ROBOT = "panda_wristcam"
BACKENDS = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class Task:
    env_id: str
    instruction: str
    max_steps: int  # evaluation budget (ManiSkill's own limits are tuned for RL with fast policies)
    show_goal: bool = False  # un-hide a goal marker ManiSkill hides from the cameras


TASKS: tuple[Task, ...] = (
    # PickCube's goal is a point in the air that ManiSkill keeps out of the images; an image policy could not
    # know it, so the green goal sphere is shown to the cameras.
    Task("PickCube-v1", "pick up the red cube and move it to the green goal", 100, show_goal=True),
    Task("StackCube-v1", "stack the red cube on top of the green cube", 150),
    Task("PushCube-v1", "push the blue cube onto the red and white target", 80),
    Task("PullCube-v1", "pull the blue cube onto the red and white target", 80),
    Task("PegInsertionSide-v1", "insert the peg into the hole in the side of the box", 200),
)


def list_tasks(suite: str = SUITE) -> list[str]:
    check_suite(suite)
    return [t.env_id for t in TASKS]


def check_suite(suite: str) -> None:
    if suite != SUITE:
        raise ValueError(f"unknown ManiSkill suite {suite!r}; the only suite is {SUITE!r} "
                         f"(tasks: {', '.join(t.env_id for t in TASKS)})")


def resolve_task(suite: str, task: int | str) -> int:
    """Task index from an index, an env id (PickCube-v1), a bare name (PickCube) or an instruction."""
    check_suite(suite)
    valid = "\n  ".join(f"{i}: {t.env_id} ({t.instruction})" for i, t in enumerate(TASKS))
    if isinstance(task, (int, np.integer)) and not isinstance(task, bool):
        if 0 <= task < len(TASKS):
            return int(task)
        raise ValueError(f"ManiSkill task index {task} out of range (0..{len(TASKS) - 1}); tasks:\n  {valid}")
    if isinstance(task, str):
        for i, t in enumerate(TASKS):
            if task in (t.env_id, t.env_id.split("-")[0], t.instruction):
                return i
        raise ValueError(f"unknown ManiSkill task {task!r}; valid tasks (index: env id):\n  {valid}")
    raise TypeError(f"task must be an int index or a str name, got {type(task).__name__}")


def num_init_states(suite: str, task: int | str) -> int:
    resolve_task(suite, task)
    return NUM_INIT_STATES


def dense_step_reward(reward: float | np.ndarray, success: bool | np.ndarray, steps_taken: int | np.ndarray,
                      max_steps: int) -> float | np.ndarray:
    """One step's RL reward from ManiSkill's normalized dense reward (in [0, 1]), in units of the episode's budget.
    On the success step the per-step maximum (1) is also credited for each remaining step, as if the episode
    stayed at success until its time limit: the episode's end at success then never costs reward, so an earlier
    success always earns more than any path that keeps the episode running, and a return is at most 1."""
    return (reward + success * (max_steps - steps_taken)) / max_steps


def episode_seed(seed: int, init_state_index: int) -> int:
    if not 0 <= init_state_index < 100_000:
        raise ValueError(f"init_state_index must be in 0..99999, got {init_state_index}")
    return seed * 100_000 + init_state_index


def ensure_vulkan() -> None:
    """SAPIEN renders (and starts) only with a Vulkan device. Without a GPU driver, point the loader at Mesa's
    lavapipe (CPU Vulkan, Mesa >= 25: `make install` puts it there from bookworm-backports), unless the
    user already chose an ICD. Must run before sapien is imported."""
    if os.environ.get("VK_ICD_FILENAMES"):
        return
    dirs = ("/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d")
    if any(glob.glob(f"{d}/nvidia*.json") for d in dirs):
        return  # a GPU driver: let the loader pick it
    lvp = sorted(p for d in dirs for p in glob.glob(f"{d}/lvp_icd*.json"))
    if not lvp:
        raise RuntimeError("ManiSkill needs a Vulkan driver and none was found (no nvidia or lavapipe ICD in "
                           "/usr/share/vulkan/icd.d). Run `make install` (installs mesa-vulkan-drivers from "
                           "bookworm-backports) or set VK_ICD_FILENAMES.")
    os.environ["VK_ICD_FILENAMES"] = lvp[0]


def render_backend() -> str:
    """Cameras render on the GPU whenever there is one, also for the CPU simulation (worker processes on a GPU
    machine, which may have no CPU Vulkan driver); on the CPU otherwise (Mesa's lavapipe)."""
    return "gpu" if torch.cuda.is_available() else "cpu"


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown ManiSkill backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if backend == "gpu" and not torch.cuda.is_available():
        raise ValueError("ManiSkill backend 'gpu' needs CUDA, and torch sees no CUDA device")
    return backend


def ensure_physx_gpu() -> None:
    """ManiSkill's GPU simulation runs on SAPIEN's PhysX GPU library, which no wheel ships: SAPIEN downloads it
    from GitHub into ~/.sapien/physx/<version>/ on first use. Offline that fails deep inside env creation with a
    connection error; here it fails with where the file must go."""
    import zipfile

    import requests
    from sapien import physx

    if physx.is_gpu_enabled():
        return
    where = os.path.expanduser(f"~/.sapien/physx/{physx.version()}")
    try:
        physx.enable_gpu()
    except (requests.RequestException, zipfile.BadZipFile, OSError) as err:
        raise RuntimeError(
            f"ManiSkill's GPU simulation needs SAPIEN's PhysX GPU library (libPhysXGpu_64.so) in {where}, and SAPIEN "
            f"could not fetch it ({type(err).__name__}: {err}). On a machine without internet, download "
            f"https://github.com/sapien-sim/physx-precompiled/releases/download/{physx.version()}/linux-so.zip "
            f"elsewhere and unzip it into {where}; or use the CPU backend") from err


def quat_wxyz_to_axis_angle(q: torch.Tensor) -> torch.Tensor:
    """(N, 4) w,x,y,z -> (N, 3) axis-angle with LIBERO's formula (angle = 2 acos(w), no sign canonicalization)."""
    w = q[:, 0].clamp(-1.0, 1.0)
    den = torch.sqrt((1.0 - w * w).clamp(min=0.0))
    scale = torch.where(den > 1e-9, 2.0 * torch.acos(w) / den.clamp(min=1e-9), torch.zeros_like(w))
    return q[:, 1:] * scale[:, None]


def to_controller_action(actions: torch.Tensor) -> torch.Tensor:
    """(N, 7) toolkit actions (LIBERO convention) -> (N, 7) pd_ee_delta_pose + gripper actions."""
    from mani_skill.utils.geometry.rotation_conversions import axis_angle_to_matrix, matrix_to_euler_angles

    if actions.ndim != 2 or actions.shape[1] != ACTION_DIM:
        raise ValueError(f"ManiSkill actions must have shape (N, {ACTION_DIM}), got {tuple(actions.shape)}")
    if not torch.isfinite(actions).all():
        raise ValueError(f"ManiSkill action has non-finite values: {actions.tolist()}")
    a = actions.clamp(-1.0, 1.0)
    # measured: a controller rotation delta r turns the TCP by -r about the world axes (CPU and GPU share
    # the code), so the world-frame axis-angle is negated before it becomes the controller's Euler delta
    euler = matrix_to_euler_angles(axis_angle_to_matrix(-a[:, 3:6] * ROT_SCALE), "XYZ") / ROT_SCALE
    return torch.cat([a[:, :3], euler, -a[:, 6:7]], dim=1)


class ManiSkillBatch:
    """N envs of one task in one process, stepped with toolkit actions; observations rendered on demand."""

    def __init__(self, task: int | str, num_envs: int = 1, image_size: int = 128, backend: str = "auto",
                 cameras: bool = True, reward: str = "sparse") -> None:
        check_reward_mode(reward)
        if num_envs < 1 or image_size <= 0:
            raise ValueError(f"need num_envs >= 1 and image_size > 0, got {num_envs}, {image_size}")
        self.backend = resolve_backend(backend)
        if self.backend == "cpu" and num_envs != 1:
            raise ValueError("ManiSkill's CPU simulation holds one env per process; use "
                             "sim.maniskill_vector.make_vector_env for N CPU envs (worker processes)")
        self.task_id = resolve_task(SUITE, task)
        self.task = TASKS[self.task_id]
        self.num_envs, self.image_size, self.cameras = num_envs, image_size, cameras
        ensure_vulkan()
        if self.backend == "gpu":
            ensure_physx_gpu()
        import gymnasium as gym
        import mani_skill.envs  # noqa: F401  (registers the tasks)

        kwargs: dict[str, Any] = dict(
            num_envs=num_envs, obs_mode="state_dict", control_mode="pd_ee_delta_pose",
            reward_mode="normalized_dense" if reward == "dense" else "sparse",
            robot_uids=ROBOT, sim_backend=self.backend, render_backend=render_backend(),
        )
        if cameras:
            kwargs["sensor_configs"] = {"width": image_size, "height": image_size}
        try:
            self._gym = gym.make(self.task.env_id, **kwargs)
        except RuntimeError as err:  # SAPIEN's device errors say little about the cause
            raise RuntimeError(f"could not create ManiSkill {self.task.env_id} ({self.backend}): {err}. A Vulkan "
                               f"device is needed (VK_ICD_FILENAMES={os.environ.get('VK_ICD_FILENAMES')}); "
                               f"Mesa's lavapipe must be >= 25 (run `make install`).") from err
        self.base = self._gym.unwrapped
        self.device = self.base.device

    def reset(self, seeds: list[int] | None = None, env_idx: list[int] | None = None) -> None:
        """Reset all envs (`seeds`: one per env, or None), or only the envs in `env_idx` (a GPU partial reset).

        Partial resets take no seeds: ManiSkill 3.0.1 draws a batch's placements from one torch stream seeded by
        the first env's seed, so on the GPU the sequence of episodes is reproducible from the full reset's seeds
        but a single env's episode is not a function of its own seed (on the CPU, one env, it is)."""
        if env_idx is None:
            if seeds is not None and len(seeds) != self.num_envs:
                raise ValueError(f"need {self.num_envs} seeds, got {len(seeds)}")
            self.base.reset(seed=seeds if seeds is None or self.num_envs > 1 else seeds[0])
        else:
            if seeds is not None:
                raise ValueError("a partial reset takes no seeds (see ManiSkillBatch.reset)")
            idx = torch.as_tensor(env_idx, device=self.device, dtype=torch.long)
            self.base.reset(options={"env_idx": idx})
        if self.task.show_goal:
            self._reveal_goal()

    def _reveal_goal(self) -> None:
        goal = getattr(self.base, "goal_site", None)
        hidden = self.base._hidden_objects
        if goal is not None and any(o is goal for o in hidden):
            hidden[:] = [o for o in hidden if o is not goal]
            goal.show_visual()

    def step(self, actions: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 7) toolkit actions -> (reward (N,), success (N,) bool), on the sim's device."""
        a = torch.as_tensor(np.asarray(actions, dtype=np.float32) if isinstance(actions, np.ndarray) else actions,
                            dtype=torch.float32, device=self.device)
        if a.shape[0] != self.num_envs:
            raise ValueError(f"actions must have shape ({self.num_envs}, {ACTION_DIM}), got {tuple(a.shape)}")
        _, reward, _, _, info = self.base.step(to_controller_action(a))
        return torch.as_tensor(reward, device=self.device).float().reshape(-1), info["success"].reshape(-1).bool()

    def state(self) -> torch.Tensor:
        """(N, 8) float32: TCP position + TCP axis-angle + finger joints."""
        pose = self.base.agent.tcp.pose
        fingers = self.base.agent.robot.get_qpos()[:, -2:]
        return torch.cat([pose.p, quat_wxyz_to_axis_angle(pose.q), fingers], dim=1).float()

    def images(self) -> torch.Tensor:
        """(N, cameras, H, W, 3) uint8 in `CAMERAS` order, rendered now."""
        if not self.cameras:
            raise RuntimeError("this ManiSkillBatch was built with cameras=False")
        data = self.base._get_obs_sensor_data()
        return torch.stack([data[uid]["rgb"][..., :3] for uid in CAMERAS.values()], dim=1)

    def close(self) -> None:
        if getattr(self, "_gym", None) is not None:
            self._gym.close()
            self._gym = None


class ManiSkillEnv:
    """One ManiSkill task on the CPU simulation, both cameras; implements `sim.base.Env`."""

    action_dim = ACTION_DIM
    camera_names = tuple(CAMERAS)

    def __init__(self, suite: str, task_id: int | str, image_size: int = 128, max_steps: int | None = None,
                 seed: int = 7, reward: str = "sparse") -> None:
        self.suite = suite
        self.task_id = resolve_task(suite, task_id)
        task = TASKS[self.task_id]
        self.task_name, self.instruction = task.env_id, task.instruction
        self.max_steps = task.max_steps if max_steps is None else int(max_steps)
        if self.max_steps <= 0:
            raise ValueError(f"max_steps must be positive, got {self.max_steps}")
        self.seed, self.image_size = seed, image_size
        self._batch = ManiSkillBatch(self.task_id, 1, image_size, backend="cpu", reward=reward)
        self.reward = reward
        self._steps, self._random_resets = 0, 0
        self._needs_reset = True
        self._frames: dict[str, np.ndarray] = {}

    def _observation(self, render: bool) -> Observation:
        if render or not self._frames:
            cams = self._batch.images()[0].cpu().numpy()
            self._frames = {name: np.ascontiguousarray(cams[i]) for i, name in enumerate(CAMERAS)}
        state = self._batch.state()[0].cpu().numpy().astype(np.float32)
        return Observation(images=dict(self._frames), state=state, instruction=self.instruction)

    def reset(self, init_state_index: int | None = None) -> Observation:
        if init_state_index is None:  # a fresh placement, reproducible from the env's seed
            index = NUM_INIT_STATES + self._random_resets
            self._random_resets += 1
        else:
            if isinstance(init_state_index, bool) or not isinstance(init_state_index, (int, np.integer)):
                raise TypeError(f"init_state_index must be an int, got {type(init_state_index).__name__}")
            index = int(init_state_index)
        self._batch.reset([episode_seed(self.seed, index)])
        self._steps, self._needs_reset = 0, False
        return self._observation(render=True)

    def step(self, action: np.ndarray, observe: bool = True) -> StepResult:
        """observe=False skips rendering: physics, state, reward and success are exact, the images are the
        last rendered ones."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (ACTION_DIM,):
            raise ValueError(f"ManiSkill action must have shape ({ACTION_DIM},), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"ManiSkill action has non-finite values: {a.tolist()}")
        if self._needs_reset:
            raise RuntimeError("ManiSkillEnv.step called before reset()")
        if self._steps >= self.max_steps:
            raise RuntimeError(f"episode already used its max_steps={self.max_steps}; call reset()")
        reward, success = self._batch.step(torch.from_numpy(a[None].astype(np.float32)))
        self._steps += 1
        done = bool(success[0])
        info = {"success": done, "steps": self._steps, "truncated": self._steps >= self.max_steps}
        r = float(reward[0])
        if self.reward == "dense":
            r = float(dense_step_reward(r, done, self._steps, self.max_steps))
        return StepResult(self._observation(render=observe), r, done, info)

    def raw_env(self) -> Any:
        """The underlying ManiSkill env (privileged state: experts, debugging)."""
        return self._batch.base

    def close(self) -> None:
        if getattr(self, "_batch", None) is not None:
            self._batch.close()
            self._batch = None

