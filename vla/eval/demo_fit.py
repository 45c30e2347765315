"""Does a BC policy read the scene? Its first chunk on each demonstration's first frame against the demo's.

An episode's first decision is where the placement matters most: the demos head for wherever the object is,
so their first actions differ from episode to episode. A policy that reads the images predicts those
differences (a high correlation across episodes, per action dimension); a policy that learned one average
trajectory predicts about the same chunk everywhere (correlation near 0, error near the demos' own spread).
Success rates cannot tell these apart on a task whose layout barely varies; this can, on the training data
itself, in seconds.

    vla fit --ckpt runs/push_pi0/checkpoints/step_0001500 --episodes 20
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

DIM_NAMES = ("x", "y", "z", "rot_x", "rot_y", "rot_z", "gripper")


def episode_starts(episode_index: np.ndarray) -> list[int]:
    """Row of each episode's first frame, in the dataset's order."""
    if episode_index.ndim != 1 or len(episode_index) == 0:
        raise ValueError(f"episode_index must be a non-empty 1-d array, got shape {episode_index.shape}")
    return [0] + [int(i) for i in np.flatnonzero(np.diff(episode_index) != 0) + 1]


def fit_table(predicted: np.ndarray, demo: np.ndarray) -> list[dict]:
    """Per action dimension, over episodes: the demos' spread (std of their first-chunk means), the policy's mean
    absolute error and the correlation of the two. predicted, demo: (episodes, steps, action_dim)."""
    if predicted.shape != demo.shape or predicted.ndim != 3:
        raise ValueError(f"predicted {predicted.shape} and demo {demo.shape} must both be (episodes, steps, dims)")
    if predicted.shape[0] < 1:
        raise ValueError("no episodes to compare")
    p, d = predicted.mean(axis=1), demo.mean(axis=1)  # (episodes, dims): where each first chunk heads
    rows = []
    for k in range(p.shape[1]):
        spread = float(d[:, k].std())
        # a correlation needs 3+ episodes and both sides varying; otherwise it is reported as nan
        both_vary = len(p) >= 3 and spread > 1e-6 and float(p[:, k].std()) > 1e-6
        corr = float(np.corrcoef(p[:, k], d[:, k])[0, 1]) if both_vary else float("nan")
        rows.append({"dim": DIM_NAMES[k] if k < len(DIM_NAMES) else str(k), "demo_spread": spread,
                     "mae": float(np.abs(p[:, k] - d[:, k]).mean()), "correlation": corr})
    return rows


def first_chunk_fit(ckpt: str | Path, episodes: int = 20, dataset: str | None = None, seed: int = 0) -> dict:
    """Load the checkpoint and its training dataset (or `dataset`), predict the first chunk of up to `episodes`
    demos and compare; returns {"dataset", "episodes", "steps", "sampler", "dims": fit_table rows}."""
    from vla.checkpoint import load_policy
    from vla.data.dataset import StreamingFrames, open_dataset, validate_dataset
    from vla.data.features import DatasetKeys
    from vla.experiment import demo_dataset_dir

    policy = load_policy(ckpt, device="cpu")
    cfg = policy.cfg
    source = dataset or cfg.data.dataset or str(demo_dataset_dir(cfg))
    if dataset is None and cfg.data.dataset is None and not Path(source).is_dir():
        raise FileNotFoundError(f"the checkpoint's generated demos are not at {source}; pass --dataset")
    ds = open_dataset(source, cfg.head.chunk_size, cfg.data.action_key)
    layout = validate_dataset(ds, cfg.data.cameras, cfg.head.action_dim, cfg.data.use_state,
                              DatasetKeys.from_config(cfg.data))
    starts = episode_starts(np.asarray(ds.hf_dataset["episode_index"]))[:episodes]
    frames = StreamingFrames(ds, layout, policy.backbone.image_size)
    batch = frames.batch(starts)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        predicted = np.stack([policy.act(batch["images"][i:i + 1], batch["state"][i:i + 1], [batch["task"][i]],
                                         generator)[0] for i in range(len(starts))])
    demo = batch["action"].numpy()
    valid = ~batch["action_pad"].numpy()  # the window past an episode's end is padding
    steps = int(valid.all(axis=0).sum())  # steps every first chunk has for real
    if steps == 0:
        raise ValueError("a demo is shorter than one step; nothing to compare")
    return {"dataset": source, "episodes": len(starts), "steps": steps, "sampler": cfg.head.sampler,
            "dims": fit_table(predicted[:, :steps], demo[:, :steps])}


def format_fit(result: dict) -> str:
    lines = [f"first chunk ({result['steps']} steps) on the first frame of {result['episodes']} demos of "
             f"{result['dataset']} ({result['sampler']} sampler)",
             f"{'dim':>8} {'demo spread':>12} {'policy MAE':>11} {'correlation':>12}"]
    for row in result["dims"]:
        lines.append(f"{row['dim']:>8} {row['demo_spread']:>12.3f} {row['mae']:>11.3f} {row['correlation']:>12.2f}")
    lines.append("correlation near 0 where the demos spread: the policy does not follow the placement there")
    return "\n".join(lines)
