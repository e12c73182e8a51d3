"""`PredictConfig` and `StreamConfig`: the flags of `edgetune predict` and `edgetune stream`, one field each
(the CLI is generated from them)."""

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
    decode_workers: int | None = opt("threads decoding the next images while the model runs (0: decode in the main "
                                     "thread); None = one per core beyond the first, at least 1, at most 4. Used "
                                     "with one interpreter", None)
    interpreters: int | None = opt("interpreters classifying images side by side, each with --threads / N threads "
                                   "(at least 1) and decoding its own images; None = one per core of --threads (at "
                                   "most 4) for 16 images or more on CPU, else 1. Same probabilities either way", None)


@dataclass
class StreamConfig:
    """How `edgetune stream` reads its source, paces it, reports decisions and when it stops."""

    fps: float | None = opt("replay rate of a video file or image folder in frames/s; None = the video's own rate "
                            "(10 for images); 0 = as fast as frames can be read. Cameras set their own rate", None)
    every: int = opt("classify every Nth frame read (the others are skipped, not counted as dropped)", 1)
    min_confidence: float = opt("print only decisions whose top probability is at least this (0..1)", 0.0)
    duration: float | None = opt("stop after this many seconds; None = until the source ends or Ctrl-C", None)
    max_frames: int | None = opt("stop after this many classified frames; None = no limit", None)
    json: bool = opt("print one JSON object per decision (frame, time_s, label, index, probability, latency_ms, "
                     "fps) instead of text lines", False)
    show: bool = opt("show the frames with the label in a window (needs a display and OpenCV with GUI support)", False)
    stats: Path | None = opt("write the end-of-stream statistics (latency percentiles, processed and dropped frames) "
                             "to this JSON file; an existing file is replaced only if it is an edgetune stats file", None)
    threads: int | None = opt("interpreter threads; None = all available cores", None)
    resolution: str | None = opt("camera capture size WIDTHxHEIGHT, e.g. 640x480; None = the camera's default "
                                 "(picamera: 640x480)", None)

    def validate(self) -> None:
        """Raise UserError for values no stream can honour."""
        from edgetune import UserError

        if self.every < 1:
            raise UserError(f"--every must be >= 1, got {self.every}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise UserError(f"--min-confidence must be within 0..1, got {self.min_confidence}")
        if self.duration is not None and not self.duration > 0:
            raise UserError(f"--duration must be > 0 seconds, got {self.duration}")
        if self.max_frames is not None and self.max_frames < 1:
            raise UserError(f"--max-frames must be >= 1, got {self.max_frames}")
        if self.fps is not None and not self.fps >= 0:
            raise UserError(f"--fps must be >= 0 (0: as fast as possible), got {self.fps}")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be >= 1, got {self.threads}")
