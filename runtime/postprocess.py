"""Model outputs -> class probabilities: the one definition, used by the runtime, convert, bench and training reports."""

from __future__ import annotations

import numpy as np

OUTPUT_KINDS = ("binary_logit", "softmax_logits", "probabilities")


def probabilities(outputs: np.ndarray, output_kind: str | None = None) -> np.ndarray:
    """(N, K) model outputs (already dequantized) -> float32 (N, classes) probabilities.

    Args:
        outputs: Raw outputs; any shape (N, ...) is flattened to (N, K).
        output_kind: binary_logit (one logit, sigmoid gives P(class 1)), softmax_logits, or probabilities
            (returned as they are). None infers it from the width: one column is a binary logit, more
            columns are softmax logits (what `edgetune train` produces).

    Returns:
        float32 (N, classes); a binary logit gives two columns [1 - p, p].
    """
    z = np.asarray(outputs, np.float32)
    z = z.reshape(z.shape[0], -1)
    kind = output_kind or ("binary_logit" if z.shape[1] == 1 else "softmax_logits")
    if kind == "binary_logit":
        p1 = 1.0 / (1.0 + np.exp(-z[:, :1]))
        return np.concatenate([1.0 - p1, p1], axis=1).astype(np.float32)
    if kind == "softmax_logits":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    if kind == "probabilities":
        return np.array(z, dtype=np.float32)
    raise ValueError(f"output kind {kind!r} is not one of {OUTPUT_KINDS}")
