"""Diffusion head on a SmolVLM/Idefics3-style backbone (CogACT / Diffusion-Policy style).

The same action expert as pi0 reads the cached prefix and predicts the noise; diffusers' DDPM
scheduler adds noise for training (100 timesteps, squared-cosine betas) and its DDIM scheduler
samples in 10 steps. RL: DPPO on the denoising chain (DDIM eta=1, std floored at 0.1).
"""

REAL_CHECKPOINT = "HuggingFaceTB/SmolVLM-256M-Instruct"  # backbone.name=smolvlm

RECIPE = {
    "backbone": {"name": "tiny_smolvlm"},
    "head": {"type": "diffusion", "chunk_size": 8, "action_dim": 7,
             "diffusion": {"train_timesteps": 100, "inference_steps": 10, "prediction": "epsilon"}},
    "norm": {"action": "q01_q99", "state": "q01_q99", "action_skip_dims": []},
    "eval": {"replan_steps": 8},
}
