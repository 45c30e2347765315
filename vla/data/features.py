"""Feature names of the LIBERO-style LeRobot datasets this toolkit reads and writes.

The layout follows the public LIBERO LeRobot datasets: an agent-view image, a wrist image, an 8-dim
state (eef pos 3 + axis-angle 3 + gripper qpos 2), a 7-dim action and a task string per frame.
"""
from __future__ import annotations

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
