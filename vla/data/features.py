"""Feature names of the LIBERO-style LeRobot datasets this toolkit reads and writes.

The layout follows the public LIBERO LeRobot datasets: an agent-view image, a wrist image, an 8-dim
state (eef pos 3 + axis-angle 3 + gripper qpos 2), a 7-dim action and a task string per frame.
"""
from __future__ import annotations

from dataclasses import dataclass

AGENTVIEW_KEY = "observation.images.image"
WRIST_KEY = "observation.images.wrist_image"
STATE_KEY = "observation.state"
ACTION_KEY = "action"

# camera name in sim.base.Observation.images -> dataset key
CAMERA_TO_KEY = {"agentview": AGENTVIEW_KEY, "wrist": WRIST_KEY}

STATE_DIM = 8
ACTION_DIM = 7
LIBERO_FPS = 20


def libero_features(image_size: int, use_videos: bool = True) -> dict:
    """The `features` dict for `LeRobotDataset.create`."""
    image_dtype = "video" if use_videos else "image"
    image_feature = {"dtype": image_dtype, "shape": (image_size, image_size, 3), "names": ["height", "width", "channel"]}
    return {
        AGENTVIEW_KEY: image_feature,
        WRIST_KEY: dict(image_feature),
        STATE_KEY: {"dtype": "float32", "shape": (STATE_DIM,), "names": ["state"]},
        ACTION_KEY: {"dtype": "float32", "shape": (ACTION_DIM,), "names": ["action"]},
    }


@dataclass(frozen=True)
class DatasetKeys:
    """Where a dataset keeps each input: this layout's keys unless `data.camera_keys` / `data.state_key` /
    `data.action_key` say otherwise (openpi's LIBERO: `image`, `wrist_image`, `state`, `actions`)."""

    cameras: tuple[tuple[str, str], ...] = ()  # (camera role, dataset key) overrides
    state: str = STATE_KEY
    action: str = ACTION_KEY

    def camera(self, role: str) -> str:
        return dict(self.cameras).get(role, CAMERA_TO_KEY.get(role, role))

    @classmethod
    def from_config(cls, data) -> "DatasetKeys":
        return cls(tuple(sorted(data.camera_keys.items())), data.state_key, data.action_key)

    def overrides(self, cameras: list[str]) -> str:
        """These keys as the command-line overrides that select them, for a policy reading `cameras`."""
        parts = []
        mapped = [(r, k) for r, k in self.cameras if r in cameras]
        if mapped:
            parts.append('data.camera_keys="{' + ", ".join(f"{r}: {k}" for r, k in mapped) + '}"')
        if self.state != STATE_KEY:
            parts.append(f"data.state_key={self.state}")
        if self.action != ACTION_KEY:
            parts.append(f"data.action_key={self.action}")
        return " ".join(parts)


# the LIBERO LeRobot datasets on the Hub whose keys differ from this layout's
KNOWN_LAYOUTS = {
    "openpi's LIBERO (physical-intelligence/libero)":
        DatasetKeys((("agentview", "image"), ("wrist", "wrist_image")), "state", "actions"),
    "lerobot's LIBERO (HuggingFaceVLA/libero, lerobot/libero)":
        DatasetKeys((("wrist", "observation.images.image2"),)),
}
