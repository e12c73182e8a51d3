"""Contact sheet of the held-out images whose top-1 answer changed between Keras and an export.

Agreement says how many images flipped; the sheet shows which, so a reader can tell borderline
images (both models unsure) from a broken export (confident and wrong). matplotlib with the Agg
backend: no display needed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

COLUMNS = 6
MAX_SHOWN = 48


def flipped(keras_probs: np.ndarray, export_probs: np.ndarray) -> np.ndarray:
    """Indices of the images whose top-1 differs, largest probability change first."""
    keras_top, export_top = keras_probs.argmax(1), export_probs.argmax(1)
    idx = np.flatnonzero(keras_top != export_top)
    change = np.abs(keras_probs[idx, keras_top[idx]] - export_probs[idx, keras_top[idx]])
    return idx[np.argsort(-change, kind="stable")]


def write_flips_sheet(out: Path, images: np.ndarray, names: Sequence[str], keras_probs: np.ndarray,
                      export_probs: np.ndarray, labels: Sequence[str], title: str) -> Path | None:
    """Write a PNG grid of the flipped images, each with the Keras and the export label and probability.

    Args:
        out: The PNG to write (written under a temporary name, then renamed).
        images: (N, H, W, 3) model inputs in 0..255, row-aligned with the probabilities.
        names: N file names shown under each image.
        keras_probs: (N, classes) Keras probabilities.
        export_probs: (N, classes) the export's probabilities.
        labels: Class names.
        title: Sheet title (preset and agreement).

    Returns:
        The PNG path, or None when no image flipped (nothing written).
    """
    idx = flipped(keras_probs, export_probs)
    if len(idx) == 0:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = idx[:MAX_SHOWN]
    rows = int(np.ceil(len(shown) / COLUMNS))
    height = 2.9 * rows + 0.6
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(2.3 * COLUMNS, height), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, shown):
        k, e = int(keras_probs[i].argmax()), int(export_probs[i].argmax())
        ax.imshow(np.clip(images[i], 0, 255).astype(np.uint8))
        ax.set_title(f"{Path(names[i]).name[:28]}\nkeras {labels[k]} {keras_probs[i, k]:.2f}\n"
                     f"export {labels[e]} {export_probs[i, e]:.2f}", fontsize=8)
    more = f" ({len(shown)} of {len(idx)} shown, largest change first)" if len(idx) > len(shown) else ""
    fig.suptitle(f"{title}: {len(idx)} of {len(keras_probs)} held-out images changed top-1{more}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / height))  # the top 0.5 inch is the title's
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=80)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return out
