"""Plots and the confusion matrix written into a run dir: views of the history and test predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    return plt


def probabilities(logits: np.ndarray) -> np.ndarray:
    """(N, classes) probabilities from binary (N, 1) or softmax (N, C) logits."""
    logits = np.asarray(logits, np.float64)
    if logits.shape[-1] == 1:
        p = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        return np.stack([1 - p, p], axis=1)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


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


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n: int) -> np.ndarray:
    m = np.zeros((n, n), np.int64)
    np.add.at(m, (labels.astype(int), preds.astype(int)), 1)
    return m


def plot_confusion(matrix: np.ndarray, names: list[str], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 3, 1.2 * len(names) + 2.5))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("test confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_reports(run: Path, deploy_model, splits, test_ds, history: dict, stage1_epochs: int) -> dict:
    """Write learning_curves.png, sample_predictions.png, confusion_matrix.png; return the matrix."""
    images, labels = [], []
    for x, y in test_ds:
        images.append(x.numpy())
        labels.append(np.asarray(y).reshape(-1))
    images_np, labels_np = np.concatenate(images), np.concatenate(labels).astype(int)
    probs = probabilities(deploy_model.predict(images_np, verbose=0))
    preds = probs.argmax(axis=1)
    n = len(splits.classes)
    matrix = confusion_matrix(labels_np, preds, n)
    learning_curves(history, stage1_epochs, run / "learning_curves.png")
    sample_predictions(images_np, probs, labels_np, splits.classes, run / "sample_predictions.png")
    plot_confusion(matrix, splits.classes, run / "confusion_matrix.png")
    return {"labels": splits.classes, "matrix": matrix.tolist(),
            "per_class_accuracy": {c: float(matrix[i, i] / max(1, matrix[i].sum())) for i, c in enumerate(splits.classes)}}
