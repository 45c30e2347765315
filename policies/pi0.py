"""pi0: flow matching with an action expert on a PaliGemma-style backbone.

The expert (a narrower Gemma with the backbone's depth and attention geometry) attends to the
cached image/instruction/proprio prefix; training draws t ~ Beta(1.5, 1) and regresses the velocity
noise - actions; sampling takes 10 Euler steps from noise. RL: Flow-SDE or Flow-Noise (pi_RL).
pi0 itself predicts 50-step chunks and replans every 5 on LIBERO; the CPU recipe keeps 8 and 8.
"""

REAL_CHECKPOINT = "google/paligemma-3b-pt-224"  # pi0's base VLM (backbone.name=paligemma); openpi's weights: lerobot/pi0

RECIPE = {
    "backbone": {"name": "tiny_paligemma"},
    "head": {"type": "flow", "chunk_size": 8, "action_dim": 7, "flow": {"steps": 10}},
    "norm": {"action": "mean_std", "state": "mean_std", "action_skip_dims": []},
    "eval": {"replan_steps": 8},
}
