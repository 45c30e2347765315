"""OpenVLA / RT-2: actions as language tokens, 256 uniform bins on [-1, 1] mapped onto the
language model's last vocabulary ids, decoded autoregressively (one action per chunk, as OpenVLA)."""

REAL_CHECKPOINT = "openvla/openvla-7b"

RECIPE = {
    "backbone": {"name": "tiny_paligemma"},
    "head": {"type": "tokenized", "chunk_size": 1, "action_dim": 7, "num_bins": 256},
    "norm": {"action": "q01_q99", "state": "q01_q99", "action_skip_dims": [6]},
    "eval": {"replan_steps": 1},
}
