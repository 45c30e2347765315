"""Confidence intervals for success rates, and the paired test of two evaluations of the same episodes."""
from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval; sensible at 0/n and n/n, unlike the normal approximation."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact_p(gained: int, lost: int) -> float:
    """Two-sided exact McNemar test: under 'no change' each discordant episode (fail->success or
    success->fail) is a fair coin, so p = 2 P(Binomial(gained + lost, 1/2) <= min(gained, lost))."""
    if gained < 0 or lost < 0:
        raise ValueError(f"discordant counts must be >= 0, got gained={gained}, lost={lost}")
    if gained + lost == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(min(gained, lost), gained + lost, 0.5).pvalue)


def paired_outcomes(before: dict[str, bool], after: dict[str, bool]) -> dict:
    """Success of the same episodes (same key: task, init state, seed) under two policies: the
    discordant counts and the exact McNemar p-value. Sharper than comparing two intervals, because
    episodes that every policy solves (or none does) carry no information about the change."""
    shared = sorted(before.keys() & after.keys())
    if not shared:
        raise ValueError("the two evaluations share no episode keys; were they run on the same episode set?")
    gained = sum(1 for k in shared if after[k] and not before[k])
    lost = sum(1 for k in shared if before[k] and not after[k])
    return {"episodes": len(shared), "gained": gained, "lost": lost,
            "both": sum(1 for k in shared if before[k] and after[k]),
            "neither": sum(1 for k in shared if not before[k] and not after[k]),
            "mcnemar_p": mcnemar_exact_p(gained, lost)}
