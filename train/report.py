"""Plots and the confusion matrix written into a run dir: views of the history and test predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# The one logits -> probabilities function lives in the runtime; re-exported for callers that imported it here.
from edgetune.runtime import probabilities  # noqa: F401


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    return plt


def learning_curves(history: dict, stage1_epochs: int, path: Path) -> None:
    """Accuracy and loss per epoch with the tutorial's "Start Fine Tuning" marker."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 8), sharex=True)
    epochs = np.arange(1, len(history.get("accuracy", [])) + 1)
    for ax, key, title in ((ax1, "accuracy", "Accuracy"), (ax2, "loss", "Cross entropy")):
        ax.plot(epochs, history.get(key, []), label=f"Training {key}")
        ax.plot(epochs[: len(history.get(f"val_{key}", []))], history.get(f"val_{key}", []), label=f"Validation {key}")
        if 0 < stage1_epochs < len(epochs):
            ax.axvline(stage1_epochs + 0.5, color="green", linestyle="--", label="Start Fine Tuning")
        ax.set_title(f"Training and Validation {title}")
        ax.legend(loc="lower right" if key == "accuracy" else "upper right")
        ax.grid(alpha=0.3)
    ax2.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sample_predictions(images: np.ndarray, probs: np.ndarray, labels: np.ndarray, names: list[str], path: Path) -> None:
    """3x3 grid of test images titled "predicted (p) / true", wrong ones in red."""
    plt = _plt()
    fig = plt.figure(figsize=(9, 9))
    for i in range(min(9, len(images))):
        ax = plt.subplot(3, 3, i + 1)
        ax.imshow(np.clip(images[i], 0, 255).astype("uint8"))
        pred = int(probs[i].argmax())
        ok = pred == int(labels[i])
        ax.set_title(f"{names[pred]} ({probs[i, pred]:.2f}) / {names[int(labels[i])]}", color="black" if ok else "red", fontsize=10)
        ax.axis("off")
    fig.suptitle("test images: predicted (probability) / true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, names: list[str], path: Path) -> None:
    """Row-normalised confusion matrix (each true class sums to 1), readable from 2 to ~50 classes.

    The figure grows with the class count; counts are written into the cells only while they fit
    (up to 15 classes), and a row's share is the colour, so a small class's mistakes show as clearly
    as a large one's.
    """
    plt = _plt()
    k = len(names)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    side = min(24.0, max(5.0, 0.45 * k + 3))
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if k <= 15:
        for (i, j), v in np.ndenumerate(matrix):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=9 if k <= 8 else 7,
                        color="white" if share[i, j] > 0.5 else "black")
    font = 10 if k <= 15 else max(5, 10 - k // 10)
    ax.set_xticks(range(k), names, rotation=90 if k > 8 else 45, ha="center" if k > 8 else "right", fontsize=font)
    ax.set_yticks(range(k), names, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"test confusion matrix, normalised by row ({int(matrix.sum())} images)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_reports(run: Path, deploy_model, splits, test_ds, history: dict, stage1_epochs: int) -> dict:
    """Write learning_curves.png, sample_predictions.png, confusion_matrix.png; return the test report.

    The report (`edgetune.train.metrics.classification_report`) holds the matrix, per-class
    precision/recall/F1, macro F1, balanced accuracy and the top confused pairs.
    """
    from edgetune.train.metrics import classification_report

    images, labels = [], []
    for x, y in test_ds:
        images.append(x.numpy())
        labels.append(np.asarray(y).reshape(-1))
    images_np, labels_np = np.concatenate(images), np.concatenate(labels).astype(int)
    probs = probabilities(deploy_model.predict(images_np, verbose=0))
    report = classification_report(labels_np, probs.argmax(axis=1), splits.classes)
    learning_curves(history, stage1_epochs, run / "learning_curves.png")
    sample_predictions(images_np, probs, labels_np, splits.classes, run / "sample_predictions.png")
    plot_confusion(np.array(report["matrix"]), splits.classes, run / "confusion_matrix.png")
    return {"labels": splits.classes, "matrix": report["matrix"], "top_confusions": report["top_confusions"],
            "per_class_accuracy": {c: v["recall"] for c, v in report["per_class"].items()}}
