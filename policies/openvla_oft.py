"""OpenVLA-OFT: parallel decoding of an 8x7 action chunk with an L1 regression head.

Empty action slots (one per action dimension per step) attend bidirectionally to each other and to
the image/proprio/instruction prefix; an MLP maps their last hidden states to actions. Proprio is
projected into the backbone width as one extra prefix token. Actions are q01/q99-normalized with
the gripper left as it is.
"""

REAL_CHECKPOINT = "openvla/openvla-7b"  # base VLM OFT fine-tunes from (backbone.name=openvla)

RECIPE = {
    "backbone": {"name": "tiny_paligemma"},
    "head": {"type": "oft", "chunk_size": 8, "action_dim": 7},
    "norm": {"action": "q01_q99", "state": "q01_q99", "action_skip_dims": [6]},
    "eval": {"replan_steps": 8},
}
