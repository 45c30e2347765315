"""OpenVLA / RT-2: actions as language tokens, 255 uniform bins on [-1, 1] (OpenVLA's 256 bin edges)
as vocabulary ids, decoded autoregressively (one action per chunk, as OpenVLA). On openvla-7b
(backbone.name=openvla) the bins are its own pretrained action tokens; on other backbones the last ids."""

REAL_CHECKPOINT = "openvla/openvla-7b"

RECIPE = {
    "backbone": {"name": "tiny_paligemma"},
    "head": {"type": "tokenized", "chunk_size": 1, "action_dim": 7, "num_bins": 255},
    "norm": {"action": "q01_q99", "state": "q01_q99", "action_skip_dims": [6]},
    "eval": {"replan_steps": 1},
}
