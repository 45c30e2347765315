"""Is a dataset's gripper action in this toolkit's convention (-1 open, +1 close, as LIBERO's env)?

The gripper dimension is left unnormalized (`norm.action_skip_dims`) and every consumer acts on its
sign, so a dataset in another convention trains without any error and fails at run time: OpenVLA's
transformed LIBERO data (0 = close, 1 = open) would open when it means to close. Two checks on the
raw columns, before training: the values' range, and, where the LIBERO-layout state holds the
finger positions, which way the fingers move after the command switches.
"""
from __future__ import annotations

import numpy as np

FINGER = 6  # LIBERO-layout state: eef pos (3), axis-angle (3), finger positions (2); the first opens positive
HORIZON = 5  # steps after a switch over which the fingers must have moved
MIN_MOVE = 1e-3  # m: finger motion that counts as moving


def check_gripper_convention(actions: np.ndarray, episodes: np.ndarray, state: np.ndarray | None,
                             dim: int) -> None:
    """ValueError naming the problem and the conversion when the gripper column `dim` of (N, A) `actions`
    is not -1 open / +1 close. `state` (N, 8): its finger positions (state[6:8], when they look like fingers)
    are checked to close after +1; None checks the values only."""
    g = actions[:, dim]
    hint = ("this toolkit's gripper convention is -1 open / +1 close (LIBERO's env, the scripted demos, the robot "
            "backends); convert the dataset's action[..., {d}] (1 = open: g' = 1 - 2 g; 1 = close: g' = 2 g - 1; "
            "opposite signs: g' = -g), or set data.check_gripper=false if this dimension is not a gripper")
    hint = hint.replace("{d}", str(dim))
    lo, hi = float(g.min()), float(g.max())
    if lo < -1.0 - 1e-6 or hi > 1.0 + 1e-6:
        raise ValueError(f"gripper action (dim {dim}) takes values in [{lo:.3g}, {hi:.3g}], outside [-1, 1]; {hint}")
    if lo >= 0.0 and hi > lo:  # never open, yet it varies: 0/1 (or a continuous 0..1) where every consumer sees "close"
        raise ValueError(f"gripper action (dim {dim}) takes values in [{lo:.3g}, {hi:.3g}], never negative: the 0/1 "
                         f"convention (OpenVLA's transformed data: 0 = close, 1 = open) or a 0..1 width; {hint}")
    if not _holds_fingers(state):
        return
    agree, switches = _finger_response(g, episodes, state[:, FINGER])
    if switches >= 3 and agree / switches < 0.2:
        raise ValueError(f"gripper action (dim {dim}): after {switches - agree} of {switches} switches the fingers "
                         f"moved the other way (state[{FINGER}] opened after +1, closed after -1): +1 opens in this "
                         f"dataset; {hint}")


def _holds_fingers(state: np.ndarray | None) -> bool:
    """Whether state[6:8] look like two finger positions (LIBERO: +w/2, -w/2; ManiSkill: both +), in metres:
    equal magnitudes, within 0.1 m, and moving. Anything else (a gripper scalar, padding) is not checked."""
    if state is None or state.ndim != 2 or state.shape[1] != 8:
        return False
    a, b = state[:, FINGER], state[:, FINGER + 1]
    return bool(np.abs(a).max() < 0.1 and np.median(np.abs(np.abs(a) - np.abs(b))) < 0.005 and np.ptp(a) > MIN_MOVE)


def _finger_response(g: np.ndarray, episodes: np.ndarray, finger: np.ndarray) -> tuple[int, int]:
    """(switches the fingers followed, switches where they moved at all), over sign switches inside episodes."""
    sign = np.sign(g)
    agree = moved = 0
    for t in range(1, len(g) - HORIZON):
        if episodes[t] != episodes[t - 1] or episodes[t + HORIZON] != episodes[t]:
            continue
        if sign[t] == 0 or sign[t] == sign[t - 1]:
            continue
        delta = finger[t + HORIZON] - finger[t]
        if abs(delta) < MIN_MOVE:
            continue
        moved += 1
        agree += int(np.sign(delta) == -sign[t])  # close (+1) -> the finger position shrinks
    return agree, moved
