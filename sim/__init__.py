"""Simulators behind one env protocol (`sim.base.Env`); `SIM=` picks one by name."""
from __future__ import annotations

from sim.base import Env

SIMS = ("libero",)


def check_sim(name: str) -> None:
    if name not in SIMS:
        raise ValueError(f"unknown SIM '{name}'; valid simulators: {', '.join(SIMS)}")


def make_env(name: str, suite: str, task: int | str, image_size: int, max_steps: int | None = None, seed: int = 7) -> Env:
    check_sim(name)
    from sim.libero import LiberoEnv
    from sim.libero_setup import ensure_libero_ready

    ensure_libero_ready()
    return LiberoEnv(suite, task, image_size=image_size, max_steps=max_steps, seed=seed)
