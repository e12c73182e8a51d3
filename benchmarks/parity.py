"""One parity row for convert and bench: how an export agrees with the Keras model, judged with its noise.

Agreement (top-1 equal to Keras) needs no labels, so it is measured on every held-out image of the run;
the accuracy drop compares both with the labels on the same images (paired). Both come with 95%
intervals, and the gate has three outcomes:

* **fail** — the evidence says the export is worse: agreement's interval lies below its floor, or the
  drop's interval lies above the budget;
* **pass** — the evidence says it is fine: agreement's interval lies at or above the floor (or the outputs
  equal Keras within 1e-3 everywhere) and the measured drop is within the budget;
* **inconclusive — too few images** in between, with the number of images that would decide at the
  same observed rates.

A budget of 0.5 points cannot be proven from a few hundred images (one image of 200 is 0.5 points), so
the drop fails a preset only on evidence and otherwise is judged on its measured value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgetune.stats import images_to_decide, paired_drop_interval, wilson_interval

EQUIVALENT_DPROB = 1e-3
"""Outputs within this of Keras on every image are numerically the same model (fp32 exports)."""
VERDICTS = ("pass", "fail", "inconclusive")


@dataclass(frozen=True)
class Gate:
    """What an export must show to pass: an agreement floor per kind of preset and an accuracy budget."""

    max_drop: float = 0.5
    """Largest accuracy drop vs Keras, in percentage points."""
    int8_floor: float = 0.97
    """Top-1 agreement an integer export must reach with 95% confidence."""
    float_floor: float = 0.98
    """Top-1 agreement a float export (fp32, fp16) must reach with 95% confidence."""
    pruned_floor: float = 0.93
    """Top-1 agreement a pruned (retrained) export must reach with 95% confidence."""

    def floor_for(self, preset: str, integer: bool | None = None, pruned: bool | None = None) -> float:
        """The floor of a preset, from its flags or (models from elsewhere) from its name."""
        kind = preset_kind(preset, integer, pruned)
        return {"pruned": self.pruned_floor, "integer": self.int8_floor, "float": self.float_floor}[kind]


def preset_kind(preset: str, integer: bool | None = None, pruned: bool | None = None) -> str:
    """'float', 'integer' or 'pruned' for a preset or model name (flags win over the name when given).

    Names without a float marker (fp32, fp16, float, keras) count as integer: a third-party .tflite is
    judged by the stricter reading.
    """
    name = Path(preset).name.lower()
    if pruned if pruned is not None else "pruned" in name:
        return "pruned"
    if integer if integer is not None else not any(k in name for k in ("fp32", "fp16", "float", "keras")):
        return "integer"
    return "float"


@dataclass
class ParityRow:
    """One model against the Keras reference on the same images: what convert and bench both report."""

    name: str
    status: str = "ok"
    """ok | error (the model could not run on the data; see note)."""
    n: int = 0
    accuracy: float | None = None
    accuracy_ci95: list[float] | None = None
    per_class_accuracy: dict[str, float] = field(default_factory=dict)
    keras_accuracy: float | None = None
    drop_points: float | None = None
    """Keras accuracy minus the model's, in percentage points (negative: the model is better)."""
    drop_ci95: list[float] | None = None
    agreement: float | None = None
    """Fraction of images whose top-1 equals Keras's."""
    agreement_ci95: list[float] | None = None
    flips: int | None = None
    """Images whose top-1 differs from Keras's."""
    flip_indices: list[int] = field(default_factory=list)
    lost: int | None = None
    """Images Keras gets right and the model wrong."""
    gained: int | None = None
    """Images the model gets right and Keras wrong."""
    max_abs_dprob: float | None = None
    mean_abs_dprob: float | None = None
    floor: float | None = None
    max_drop: float | None = None
    within_budget: bool | None = None
    """Measured drop <= the budget (None without a reference)."""
    verdict: str | None = None
    """pass | fail | inconclusive (None without a reference)."""
    reason: str = ""
    images_to_decide: int | None = None
    """For an inconclusive verdict: images (at the same observed rates) that would decide it."""
    note: str = ""
    size_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def error(cls, name: str, message: str, n: int = 0) -> ParityRow:
        return cls(name=name, status="error", n=n, note=message, within_budget=False, verdict="fail",
                   reason=f"could not run on the held-out images: {message}")


def within_budget(drop_points: float | None, max_drop: float) -> bool | None:
    """Whether an accuracy drop (points; negative = better than Keras) stays inside the budget."""
    if drop_points is None:
        return None
    # Float tolerance: one image of 200 is exactly 0.5 points and must count as inside a 0.5 budget.
    return bool(drop_points <= max_drop + 1e-9)


def parity_row(name: str, probs: np.ndarray, targets: np.ndarray, labels: Sequence[str],
               reference: np.ndarray | None = None, *, floor: float | None = None, max_drop: float = 0.5) -> ParityRow:
    """Accuracy of one model and, against a reference, agreement, drop and the gate's verdict.

    Args:
        name: Row name (e.g. 'tflite_int8.tflite').
        probs: (N, classes) probabilities of the model.
        targets: (N,) true class indices.
        labels: Class names (for per-class accuracy).
        reference: (N, classes) Keras probabilities on the same inputs, if known.
        floor: Agreement floor of this model (see Gate.floor_for); default: the integer floor.
        max_drop: Accuracy budget in percentage points.
    """
    probs = np.asarray(probs, np.float64)
    y = np.asarray(targets)
    if probs.ndim != 2 or probs.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: {probs.shape[0] if probs.ndim else 0} predictions for {y.shape[0]} targets")
    pred = probs.argmax(1)
    right = pred == y
    row = ParityRow(name=name, n=int(len(y)), accuracy=float(right.mean()) if len(y) else None, max_drop=max_drop)
    interval = wilson_interval(int(right.sum()), len(y))
    row.accuracy_ci95 = list(interval) if interval else None  # how much n images can tell
    # Only classes present in the targets (an ImageNet model has 1001 labels and a handful of test images).
    row.per_class_accuracy = {label: float(right[y == k].mean()) for k, label in enumerate(labels) if (y == k).any()}
    if reference is None or not len(y):
        return row
    ref = np.asarray(reference, np.float64)
    if ref.shape != probs.shape:
        raise ValueError(f"{name}: reference shape {ref.shape} != predictions {probs.shape}")
    ref_right = ref.argmax(1) == y
    agree = ref.argmax(1) == pred
    diff = np.abs(probs - ref)
    row.keras_accuracy = float(ref_right.mean())
    row.agreement, row.flips = float(agree.mean()), int((~agree).sum())
    row.flip_indices = [int(i) for i in np.flatnonzero(~agree)]
    row.agreement_ci95 = list(wilson_interval(int(agree.sum()), len(y)))
    row.lost, row.gained = int((ref_right & ~right).sum()), int((~ref_right & right).sum())
    drop, lo, hi = paired_drop_interval(row.lost, row.gained, len(y))
    row.drop_points, row.drop_ci95 = drop * 100.0, [lo * 100.0, hi * 100.0]
    row.max_abs_dprob, row.mean_abs_dprob = float(diff.max()), float(diff.mean())
    row.within_budget = within_budget(row.drop_points, max_drop)
    row.floor = Gate().int8_floor if floor is None else floor
    judge(row)
    return row


def judge(row: ParityRow) -> ParityRow:
    """Set the row's verdict, reason and images_to_decide from its agreement and drop (see the module doc)."""
    lo, hi = row.agreement_ci95
    pct = lambda v: f"{v * 100:.1f}%"  # noqa: E731
    agreement = (f"agreement {pct(row.agreement)} ({row.n - row.flips}/{row.n}, 95% CI {pct(lo)}-{pct(hi)}) "
                 f"vs floor {pct(row.floor)}")
    drop = (f"drop {row.drop_points:+.2f} points (95% CI {row.drop_ci95[0]:+.2f} to {row.drop_ci95[1]:+.2f}) "
            f"vs budget {row.max_drop:g}")
    equivalent = row.max_abs_dprob <= EQUIVALENT_DPROB
    agree_state = "pass" if lo >= row.floor or equivalent else "fail" if hi < row.floor else "inconclusive"
    drop_state = ("fail" if row.drop_ci95[0] > row.max_drop + 1e-9 else "pass" if row.within_budget else "inconclusive")
    if "fail" in (agree_state, drop_state):
        row.verdict = "fail"
        parts = [agreement + " (below it with 95% confidence)" if agree_state == "fail" else "",
                 drop + " (above it with 95% confidence)" if drop_state == "fail" else ""]
        row.reason = "; ".join(p for p in parts if p)
    elif agree_state == "pass" and drop_state == "pass":
        row.verdict = "pass"
        row.reason = (f"outputs equal Keras within {EQUIVALENT_DPROB:g} on all {row.n} images" if equivalent
                      else agreement) + "; " + drop
    else:
        row.verdict = "inconclusive"
        needed = []
        if agree_state == "inconclusive":
            needed.append(images_to_decide(row.agreement, row.floor))
        if drop_state == "inconclusive":
            needed.append(_images_for_drop(row))
        known = [k for k in needed if k is not None]
        row.images_to_decide = max(known) if known and len(known) == len(needed) else None
        decide = (f"about {row.images_to_decide:,} held-out images would decide" if row.images_to_decide
                  else "more images would not decide it at this rate")
        parts = [agreement if agree_state == "inconclusive" else "", drop if drop_state == "inconclusive" else ""]
        row.reason = "too few images: " + "; ".join(p for p in parts if p) + f"; {decide}"
    return row


def _images_for_drop(row: ParityRow) -> int | None:
    """Images that would put the drop's interval above the budget, at the same rates of lost and gained images."""
    for scale in (2 ** k for k in range(1, 24)):
        res = paired_drop_interval(row.lost * scale, row.gained * scale, row.n * scale)
        if res and res[1] * 100.0 > row.max_drop:
            return row.n * scale
    return None


def gate_summary(rows: Sequence[ParityRow | dict[str, Any]]) -> dict[str, list[str]]:
    """{verdict: [names]} over rows (dicts from a results JSON or ParityRow objects); errors count as fail."""
    out: dict[str, list[str]] = {v: [] for v in VERDICTS}
    for r in rows:
        d = r.to_dict() if isinstance(r, ParityRow) else r
        if d.get("name") == "keras":
            continue
        verdict = d.get("verdict") or ("fail" if d.get("status") == "error" else None)
        if verdict in out:
            out[verdict].append(d["name"])
    return out
