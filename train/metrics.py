"""Classification metrics for uneven and many classes: numpy only, no TensorFlow.

Accuracy alone hides a class the model never gets right when that class is small (a 13x long tail
scores 90% by ignoring its last three classes). Next to accuracy (with its count and 95% interval),
every evaluation carries per-class precision, recall and F1, their macro averages, balanced accuracy
(the mean per-class recall) and the most frequent confusions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgetune.stats import accuracy_summary


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n: int) -> np.ndarray:
    """(n, n) counts: row = true class, column = predicted class."""
    m = np.zeros((n, n), np.int64)
    np.add.at(m, (np.asarray(labels, int).reshape(-1), np.asarray(preds, int).reshape(-1)), 1)
    return m


def top_confusions(matrix: np.ndarray, names: Sequence[str], k: int = 5) -> list[dict]:
    """The k most frequent (true, predicted) mistakes, largest first, with their share of the true class."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:k]
    out = []
    for flat in order:
        i, j = np.unravel_index(flat, off.shape)
        if off[i, j] == 0:
            break
        out.append({"true": names[i], "predicted": names[j], "count": int(off[i, j]),
                    "share_of_true": round(float(off[i, j] / max(1, matrix[i].sum())), 4)})
    return out


def classification_report(labels: np.ndarray, preds: np.ndarray, names: Sequence[str], top_k: int = 5) -> dict:
    """Accuracy (count, interval), macro F1, balanced accuracy, per-class P/R/F1 and top confusions.

    A class with no predictions has precision 0 (and F1 0), as scikit-learn's zero_division=0; a
    class absent from `labels` is left out of the macro averages.
    """
    labels, preds = np.asarray(labels, int).reshape(-1), np.asarray(preds, int).reshape(-1)
    n = len(names)
    m = confusion_matrix(labels, preds, n)
    tp = np.diag(m).astype(float)
    support, predicted = m.sum(axis=1), m.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=(precision + recall) > 0)
    present = support > 0
    accuracy = float(tp.sum() / max(1, len(labels)))
    per_class = {c: {"precision": round(float(precision[i]), 4), "recall": round(float(recall[i]), 4),
                     "f1": round(float(f1[i]), 4), "support": int(support[i])} for i, c in enumerate(names)}
    return {
        "accuracy": accuracy, **accuracy_summary(accuracy, len(labels)),
        "macro_f1": round(float(f1[present].mean()), 4) if present.any() else 0.0,
        "balanced_accuracy": round(float(recall[present].mean()), 4) if present.any() else 0.0,
        "worst_recall": round(float(recall[present].min()), 4) if present.any() else 0.0,
        "per_class": per_class,
        "top_confusions": top_confusions(m, list(names), top_k),
        "matrix": m.tolist(),
    }
