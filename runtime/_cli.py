"""Classify images with an exported model: `edgetune predict MODEL IMAGE|DIR... [--top-k K] [--json]`.

Reads the metadata JSON beside the model (labels, size, preprocessing); a model without one
(e.g. a third-party ImageNet .tflite) runs with --labels FILE and optionally --size N and
--input-range. Unreadable images get an error line each; the others still run, and the exit
code is 1 at the end. Needs numpy, Pillow and one interpreter, never TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgetune._config import add_config_args, config_from_args

LONG_RUN = 64  # images; a progress bar appears above this (on stderr only)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edgetune.runtime.config import PredictConfig

    parser.add_argument("model", type=Path, help=".tflite or .onnx model (metadata JSON beside it)")
    parser.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    add_config_args(parser, PredictConfig)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from edgetune import UserError
    from edgetune.runtime import ImageError, Predictor, find_images
    from edgetune.runtime._parallel import default_decode_workers, default_interpreters, map_ordered
    from edgetune.runtime.config import PredictConfig

    cfg = config_from_args(PredictConfig, args)
    if cfg.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {cfg.top_k}")
    if cfg.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    if cfg.decode_workers is not None and cfg.decode_workers < 0:
        raise UserError(f"--decode-workers must be >= 0, got {cfg.decode_workers}")
    if cfg.interpreters is not None and cfg.interpreters < 1:
        raise UserError(f"--interpreters must be >= 1, got {cfg.interpreters}")
    predictor = Predictor.from_path(args.model, labels=cfg.labels, size=cfg.size, threads=cfg.threads, device=cfg.device,
                                    input_range=cfg.input_range, output_kind=cfg.output_kind)
    if cfg.input_range is not None and predictor.metadata.preset != "external":
        # Overriding the contract is the classic silent accuracy killer: say so, on stderr.
        print(f"edgetune predict: note: --input-range {cfg.input_range} overrides the metadata of {args.model}",
              file=sys.stderr)
    paths = find_images(args.images)
    if not paths:
        from edgetune.runtime.image import IMAGE_SUFFIXES, suffix_summary

        found = "; ".join(f"{f}: {suffix_summary(f)}" for f in args.images if Path(f).is_dir())
        raise UserError(f"no images found in {' '.join(args.images)} ({found or 'edgetune reads ' + ' '.join(IMAGE_SUFFIXES)})")
    k = min(cfg.top_k, len(predictor.labels))
    workers = default_decode_workers() if cfg.decode_workers is None else cfg.decode_workers
    interpreters = (default_interpreters(cfg.threads, len(paths), cfg.device) if cfg.interpreters is None
                    else cfg.interpreters)
    results: list[dict] = []
    errors: list[dict] = []

    def report(path: str, p: np.ndarray) -> None:
        top = np.argsort(-p, kind="stable")[:k]
        row = {"path": path, "top": [{"label": predictor.labels[i], "index": int(i), "probability": float(p[i])} for i in top]}
        results.append(row)
        if not cfg.json:
            print(f"{path}: " + ", ".join(f"{t['label']} ({t['probability']:.4f})" for t in row["top"]), flush=True)

    def failed(path: str, exc: ImageError) -> None:
        errors.append({"path": path, "error": str(exc)})
        print(f"edgetune predict: error: {exc}", file=sys.stderr, flush=True)

    show = len(paths) > LONG_RUN
    if interpreters > 1:
        # N interpreters each decode and classify their own images side by side; results in input order.
        for path, p in _progress(predictor.classify_files(paths, interpreters, catch=ImageError), len(paths), show):
            failed(path, p) if isinstance(p, ImageError) else report(path, p)
    else:
        # Images are decoded in `workers` threads while the model runs; results come back in input order.
        decoded = _progress(map_ordered(predictor.load, paths, workers, catch=ImageError), len(paths), show)
        _run_batches(predictor, decoded, cfg.batch_size, report, failed)
    if cfg.json:
        doc = {"model": str(args.model), "labels": len(predictor.labels), "output_kind": predictor.metadata.output_kind,
               "backend": predictor.backend_info(), "interpreters": interpreters,
               "interpreter_threads": predictor.replicas(interpreters)[0].backend.threads if interpreters > 1
               else predictor.backend.threads, "predictions": results, "errors": errors}
        print(json.dumps(doc, indent=2))
    if errors:
        print(f"edgetune predict: {len(errors)} of {len(paths)} images failed", file=sys.stderr)
        return 1
    return 0


def _run_batches(predictor, decoded, batch_size: int, report, failed) -> None:
    """Classify decoded `(path, image or ImageError)` pairs `batch_size` at a time with one interpreter."""
    import numpy as np

    from edgetune.runtime import ImageError

    batch_paths: list[str] = []
    arrays: list = []

    def flush() -> None:
        if arrays:
            for path, p in zip(batch_paths, predictor.predict(np.stack(arrays))):
                report(path, p)
        batch_paths.clear()
        arrays.clear()

    for path, x in decoded:
        if isinstance(x, ImageError):
            failed(path, x)
            continue
        arrays.append(x)
        batch_paths.append(path)
        if len(arrays) >= batch_size:
            flush()
    flush()


def _progress(items, total: int, show: bool):
    if not show:
        return items
    try:
        from edgetune._progress import progress_bar
    except ImportError:  # progress bars are a nicety; predict works without them
        return items
    return progress_bar(items, total=total, desc="predict", unit="img")
