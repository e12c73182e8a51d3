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


def paired_drop_interval(keras_only: int, model_only: int, n: int, z: float = Z95) -> tuple[float, float, float] | None:
    """Accuracy drop (Keras minus model, a fraction) with a 95% interval, from paired predictions on n images.

    Only the discordant images carry information: `keras_only` are right for Keras and wrong for the
    model, `model_only` the other way round. Given m = keras_only + model_only, keras_only is binomial
    with some p, and drop = (2 p - 1) m / n; the Wilson interval of p gives the interval of the drop
    (the interval behind McNemar's test). Returns (drop, low, high), or None when n is 0.
    """
    if n <= 0:
        return None
    m = keras_only + model_only
    drop = (keras_only - model_only) / n
    if m == 0:
        return 0.0, 0.0, 0.0
    lo, hi = wilson_interval(keras_only, m, z)
    return drop, (2 * lo - 1) * m / n, (2 * hi - 1) * m / n


def images_to_decide(rate: float, threshold: float, z: float = Z95, limit: int = 10_000_000) -> int | None:
    """How many images, at the same observed `rate`, would put the 95% interval clear of `threshold`.

    Decided means the interval's low end reaches the threshold (rate above it) or its high end falls below
    it (rate below). None when the rate equals the threshold (no number of images decides).
    """
    if abs(rate - threshold) < 1e-12:
        return None

    def decided(n: int) -> bool:
        lo, hi = wilson_interval(int(round(rate * n)), n, z)
        return lo >= threshold if rate > threshold else hi < threshold

    n = 2
    while not decided(n):
        n *= 2
        if n > limit:
            return None
    lo_n, hi_n = n // 2, n
    while hi_n - lo_n > 1:
        mid = (lo_n + hi_n) // 2
        lo_n, hi_n = (lo_n, mid) if decided(mid) else (mid, hi_n)
    return hi_n
