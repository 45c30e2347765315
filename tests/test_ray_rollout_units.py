"""The plain-data encoding RL rollouts travel in between Ray actors and the learner (no Ray needed)."""
import numpy as np
import torch

from vla.random_policy import random_policy
from vla.rl.ray_rollout import decode_episodes, encode_episodes, load_weights, policy_files, weights_bytes
from vla.rl.rollout import Decision, EpisodeRollout, PlannedEpisode


def test_episodes_round_trip_through_json_and_safetensors_bytes():
    rng = np.random.default_rng(0)

    def decision(reward: float) -> Decision:
        return Decision(rng.integers(0, 255, (2, 8, 8, 3), dtype=np.uint8), rng.normal(size=8).astype(np.float32),
                        {"bins": torch.randint(0, 256, (14,)), "chain": torch.randn(3, 2, 7)}, -3.5, 0.25, reward)

    episodes = [EpisodeRollout(PlannedEpisode("libero_spatial", 0, 4, 1, 12345), "put the bowl on the plate",
                               [decision(0.0), decision(1.0)], success=True, steps=11),
                EpisodeRollout(PlannedEpisode("libero_spatial", 0, 4, 1), "put the bowl on the plate", [], steps=0)]
    meta, payload = encode_episodes(episodes)
    assert isinstance(meta, str) and isinstance(payload, bytes)  # plain data only: JSON text and safetensors bytes
    back = decode_episodes(meta, payload)
    assert [(e.plan, e.instruction, e.success, e.steps, len(e.decisions)) for e in back] == \
        [(e.plan, e.instruction, e.success, e.steps, len(e.decisions)) for e in episodes]
    for a, b in zip(episodes[0].decisions, back[0].decisions):
        assert np.array_equal(a.images, b.images) and np.array_equal(a.state, b.state)
        assert (a.log_prob, a.value, a.reward) == (b.log_prob, b.value, b.reward)
        assert all(torch.equal(a.record[k], b.record[k]) for k in a.record)
    assert decode_episodes(*encode_episodes([])) == []


def test_a_policy_travels_as_its_checkpoint_files_and_weights_bytes(tmp_path):
    from vla.checkpoint import load_policy

    policy = random_policy({"backbone": {"image_size": 32}, "head": {"chunk_size": 2}})
    files = policy_files(policy)
    assert set(files) == {"config.json", "model.safetensors", "norm_stats.safetensors", "meta.json"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    rebuilt = load_policy(tmp_path)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.01)
    load_weights(rebuilt, weights_bytes(policy))
    for (name, a), b in zip(policy.state_dict().items(), rebuilt.state_dict().values()):
        assert torch.equal(a, b), name
