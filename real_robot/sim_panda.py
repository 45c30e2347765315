"""MuJoCo Panda stand-in for the real arm: robosuite's Lift scene (Panda + OSC_POSE), real physics.

It speaks the `Robot` protocol with LIBERO's action convention: a `Command`'s absolute target and
delta rotation are turned back into a normalized OSC_POSE delta action (0.05 m / 0.5 rad per unit,
`ActionScale`), so the arm is driven by robosuite's own operational-space controller, as in LIBERO.

Time: every `send` or `hold` advances the simulation by one control period (1 / `control_hz`), so
a daemon that calls one of them per tick runs the sim in step with the wall clock. Poses are in the
robot's base frame (the Franka convention); in this scene the table top is at z = -0.11 m, so the
default safety box (z >= 0.02 m) keeps the gripper 13 cm above it.

Cameras (`render`): robosuite's agentview and the wrist camera, rendered upright with MuJoCo's own
renderer at any size. Rendering happens on the calling thread (the OpenGL context belongs to it), so
`real_robot.cameras.SimCamera` renders when the control loop asks; shadows, reflections and the
collision geoms are left out, which halves the cost on a software renderer.
"""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
from scipy.spatial.transform import Rotation

from real_robot.base import ActionScale, CameraFrame, Command, RobotObservation, RobotState, libero_rotvec

CAMERAS = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}  # our name -> MuJoCo camera
VISUAL_GEOM_GROUP = 1  # robosuite puts visual meshes in group 1 and collision geoms in group 0


class SimPanda:
    """The `Robot` protocol on a simulated Panda (robosuite Lift, OSC_POSE)."""

    def __init__(self, control_hz: float = 15.0, seed: int = 0, scale: ActionScale | None = None):
        if not control_hz > 0:
            raise ValueError(f"control_hz must be positive, got {control_hz}")
        self.control_hz, self.seed = control_hz, seed
        self.scale = scale or ActionScale()
        self._env = None
        self._obs: dict[str, np.ndarray] = {}
        self._obs_time = 0.0
        self._gripper = -1.0
        self._hold_position: np.ndarray | None = None
        self._hold_rotation: Rotation | None = None
        self._renderers: dict[tuple[int, int], object] = {}
        self._scene_option = None
        self.fault: str | None = None  # a simulation has no reflexes

    # -- Robot protocol --------------------------------------------------------------------
    def connect(self) -> None:
        import robosuite
        from robosuite import load_controller_config

        self._env = robosuite.make(
            "Lift", robots="Panda", controller_configs=load_controller_config(default_controller="OSC_POSE"),
            has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False, control_freq=self.control_hz,
            horizon=10**9, ignore_done=True, hard_reset=False)
        # robosuite's controllers are numba functions compiled on their first call (seconds on a fresh
        # install, cached afterwards): step once here, before any control clock starts, then start over
        self._step(np.array([0.1, 0.0, 0.0, 0.0, 0.0, 0.1, -1.0]))
        self.reset()  # robosuite places the cube from the global stream: seeded
        base = self._env.robots[0].robot_model.root_body
        self._base_pos = self._env.sim.data.get_body_xpos(base).copy()
        if not np.allclose(self._env.sim.data.get_body_xmat(base), np.eye(3)):
            raise RuntimeError("the stand-in assumes a robot base aligned with the world frame")

    def observe(self) -> RobotObservation:
        env = self._require()
        o = self._obs
        quat_xyzw = o["robot0_eef_quat"]
        fingers = o["robot0_gripper_qpos"]
        state = RobotState(
            joint_positions=np.array(env.robots[0]._joint_positions, dtype=float),
            joint_velocities=o["robot0_joint_vel"].astype(float),
            ee_position=o["robot0_eef_pos"] - self._base_pos,
            ee_rotvec=libero_rotvec(quat_xyzw),
            gripper_width=float(fingers[0] - fingers[1]),
            timestamp=self._obs_time)
        return RobotObservation(state)

    def send(self, command: Command) -> Command:
        if command.hold:
            self.hold()
            return command
        self._hold_position = None
        current = self._obs["robot0_eef_pos"] - self._base_pos
        move = np.clip((np.asarray(command.target_position) - current) / self.scale.meters, -1.0, 1.0)
        turn = np.clip(np.asarray(command.delta_rotvec) / self.scale.radians, -1.0, 1.0)
        gripper = float(np.clip(command.gripper, -1.0, 1.0))
        self._step(np.concatenate([move, turn, [gripper]]))
        executed = replace(command, target_position=current + move * self.scale.meters,
                           delta_rotvec=turn * self.scale.radians, gripper=gripper)
        return executed

    def hold(self) -> None:
        """Servo to the pose (position and orientation) held since the first hold call; one control
        period of sim time. Holding orientation too matters: a wrist left free keeps turning."""
        current = self._obs["robot0_eef_pos"] - self._base_pos
        rotation = Rotation.from_quat(self._obs["robot0_eef_quat"])
        if self._hold_position is None:
            self._hold_position, self._hold_rotation = current.copy(), rotation
        move = np.clip((self._hold_position - current) / self.scale.meters, -1.0, 1.0)
        # OSC_POSE applies rotation deltas on the left, in the world frame
        turn = np.clip((self._hold_rotation * rotation.inv()).as_rotvec() / self.scale.radians, -1.0, 1.0)
        self._step(np.concatenate([move, turn, [self._gripper]]))

    def new_episode(self, episode: int) -> None:
        """Home pose and a cube placed anew, seeded by the episode (a dry run's next episode starts fresh)."""
        self.reset(self.seed + episode)

    def disconnect(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()
        if self._env is not None:
            self._env.close()
            self._env = None

    # -- simulated cameras ------------------------------------------------------------------
    def render(self, camera: str, height: int, width: int) -> CameraFrame:
        """An upright (H, W, 3) uint8 frame of the current sim state from `camera` (agentview, wrist)."""
        import mujoco

        env = self._require()
        if camera not in CAMERAS:
            raise ValueError(f"unknown sim camera {camera!r}; valid: {sorted(CAMERAS)}")
        model, data = env.sim.model._model, env.sim.data._data
        renderer = self._renderers.get((height, width))
        if renderer is None:
            model.vis.quality.offsamples = 0  # no multisampling: a software renderer pays for every sample
            renderer = self._renderers[(height, width)] = mujoco.Renderer(model, height, width)
            self._scene_option = mujoco.MjvOption()
            self._scene_option.geomgroup[:] = 0
            self._scene_option.geomgroup[VISUAL_GEOM_GROUP] = 1
        renderer.update_scene(data, camera=CAMERAS[camera], scene_option=self._scene_option)
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX):
            renderer.scene.flags[flag] = False
        return CameraFrame(renderer.render().copy(), time.monotonic())

    # -- sim-only helpers -------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        """Back to robosuite's home pose with a newly placed cube (tests, dry runs between episodes)."""
        np.random.seed(self.seed if seed is None else seed)
        self._set_obs(self._require().reset())
        self._gripper, self._hold_position, self._hold_rotation = -1.0, None, None

    def object_position(self) -> np.ndarray:
        """The cube's position in the base frame (tests, scripted checks)."""
        return self._obs["cube_pos"] - self._base_pos

    def _step(self, action: np.ndarray) -> None:
        self._gripper = float(action[6])
        obs, _, _, _ = self._require().step(action)
        self._set_obs(obs)

    def _set_obs(self, obs: dict[str, np.ndarray]) -> None:
        self._obs = obs
        self._obs_time = time.monotonic()

    def _require(self):
        if self._env is None:
            raise RuntimeError("SimPanda is not connected; call connect() first")
        return self._env
