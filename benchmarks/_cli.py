"""Parity against Keras and latency of exported models (run dir or .tflite/.onnx files), into one results JSON.

  edgetune bench runs/cats_vs_dogs                    # every export/*.tflite|.onnx of the run
  edgetune bench model.tflite --labels labels.txt --size 224 --threads 1,4
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgetune._config import add_config_args, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edgetune.benchmarks.config import BenchConfig

    parser.add_argument("targets", nargs="+", type=Path, metavar="RUN_DIR_OR_MODEL")
    add_config_args(parser, BenchConfig)


def run(args: argparse.Namespace) -> int:
    from edgetune.benchmarks.bench import run_bench
    from edgetune.benchmarks.config import BenchConfig
    from edgetune.benchmarks.results import markdown_report

    cfg = config_from_args(BenchConfig, args)
    results = run_bench(cfg)
    print(markdown_report(results, cfg.baseline))
    print(f"results: {results['_path']}")
    return 0
