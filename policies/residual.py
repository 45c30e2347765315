"""Residual RL over a frozen base (ResiP): an OpenVLA-OFT base plus a small Gaussian residual on the
pooled backbone features and the base's action chunk, initialised to zero.

`make finetune POLICY=residual` behaviour-clones the base (the residual stays zero, so the policy
is its base); with head.residual.base_checkpoint=<dir> the base is loaded from a trained checkpoint,
frozen, and BC fits the residual to the base's remaining error. RL (PPO on the residual's Gaussian
log-prob) then trains only the residual.
"""

REAL_CHECKPOINT = "openvla/openvla-7b"  # the OFT base's VLM (backbone.name=openvla)

RECIPE = {
    "backbone": {"name": "tiny_paligemma"},
    "head": {"type": "residual", "chunk_size": 8, "action_dim": 7, "residual": {"base_type": "oft", "scale": 0.1, "max_residual": 2.0}},
    "norm": {"action": "q01_q99", "state": "q01_q99", "action_skip_dims": [6]},
    "eval": {"replan_steps": 8},
}
