"""Simulators behind one env protocol (`sim.base.Env`); `SIM=` picks one by name."""
from __future__ import annotations

from sim.base import Env

SIMS = ("libero", "maniskill")


def check_sim(name: str) -> None:
    if name not in SIMS:
        raise ValueError(f"unknown SIM '{name}'; valid simulators: {', '.join(SIMS)}")


def make_env(name: str, suite: str, task: int | str, image_size: int, max_steps: int | None = None, seed: int = 7,
             reward: str = "sparse") -> Env:
    """reward: `sim.base.REWARD_MODES` (dense is for RL; evaluation counts success only)."""
    check_sim(name)
    if name == "maniskill":
        from sim.maniskill import ManiSkillEnv

        return ManiSkillEnv(suite, task, image_size=image_size, max_steps=max_steps, seed=seed, reward=reward)
    from sim.libero import LiberoEnv
    from sim.libero_setup import ensure_libero_ready

    ensure_libero_ready()
    return LiberoEnv(suite, task, image_size=image_size, max_steps=max_steps, seed=seed, reward=reward)


def num_init_states(name: str, suite: str, task: int) -> int:
    """How many indexed init states a task has (LIBERO: its fixed 50; ManiSkill: 50 seeded resets by convention)."""
    check_sim(name)
    if name == "maniskill":
        from sim.maniskill import num_init_states as maniskill_init_states

        return maniskill_init_states(suite, task)
    from sim.libero import num_init_states as libero_init_states

    return libero_init_states(suite, task)


def check_episode_range(name: str, suite: str, task: int | str, first: int, count: int) -> None:
    """Refuse, before anything runs, episodes beyond a LIBERO task's fixed init states (ManiSkill's indices are
    seeds: any is valid)."""
    check_sim(name)
    if name == "maniskill" or count <= 0:
        return
    available = num_init_states(name, suite, task)
    if first < 0 or first + count > available:
        raise ValueError(f"{count} episodes from init state {first} need init states {first}..{first + count - 1}, "
                         f"but {suite} task {task} has {available} (0..{available - 1}); lower the episodes or "
                         "eval.first_init_state")
