"""How far an accuracy measured on a few hundred images can be trusted.

A 200-image test split moves in steps of 0.5 points per image, and a model that is right 97.8% of
the time scores anywhere from about 95.5% to 99.5% on such a split by chance alone. The Wilson score
interval says so next to every accuracy edgetune reports (it stays inside [0, 1] and behaves at
100%, unlike the normal approximation).
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """95% Wilson score interval (low, high) for `correct` successes out of `n`; None when n is 0."""
    if n <= 0:
        return None
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be in [0, {n}], got {correct}")
    p = correct / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def accuracy_summary(accuracy: float, n: int) -> dict:
    """{'n', 'correct', 'ci95': [low, high]} for an accuracy measured on n items."""
    correct = int(round(accuracy * n))
    interval = wilson_interval(correct, n)
    return {"n": n, "correct": correct, "ci95": list(interval) if interval else None}


def format_accuracy(accuracy: float, n: int) -> str:
    """'97.0% (194/200, 95% CI 93.6-98.6%)'."""
    s = accuracy_summary(accuracy, n)
    if s["ci95"] is None:
        return "n/a (0 images)"
    lo, hi = s["ci95"]
    return f"{accuracy * 100:.1f}% ({s['correct']}/{n}, 95% CI {lo * 100:.1f}-{hi * 100:.1f}%)"
