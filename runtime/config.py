"""`PredictConfig`: the flags of `edgetune predict`, one field each (the CLI is generated from it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgetune._config import opt


@dataclass
class PredictConfig:
    """How `edgetune predict` loads a model and reports its answers."""

    top_k: int = opt("how many classes to print per image", 1)
    json: bool = opt("print one JSON document (predictions, errors, backend) instead of text lines", False)
    threads: int | None = opt("interpreter threads; None = all available cores", None)
    device: str = opt("cpu, or gpu (ONNX Runtime's CUDA execution provider; .onnx models only)", "cpu", choices=("cpu", "gpu"))
    labels: Path | None = opt("labels file (one per line) for a model without metadata, or to override it", None)
    size: int | None = opt("input size N (NxN) for a model without metadata; None = the model's input shape", None)
    input_range: str | None = opt("values the model expects: raw|0,255|-1,1|0,1|LO,HI, written --input-range=-1,1; None = "
                                  "the metadata's, else raw for uint8/int8 inputs and 0,255 for float", None)
    output_kind: str | None = opt("how to read the output; None = the metadata's, else probabilities for quantized "
                                  "[0,1] outputs and logits otherwise", None, choices=("binary_logit", "softmax_logits", "probabilities"))
    batch_size: int = opt("images decoded and run per batch", 32)
