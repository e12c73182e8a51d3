"""Train -> convert (all presets) -> parity vs Keras -> latency on this machine -> RUN_DIR/report.md.

  edgetune pipeline                       # the tutorial's cats-vs-dogs, full recipe
  edgetune pipeline --quick --out runs/smoke
"""

from __future__ import annotations

import argparse

from edgetune._config import add_config_args, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edgetune.benchmarks.config import PipelineConfig

    add_config_args(parser, PipelineConfig)


def run(args: argparse.Namespace) -> int:
    from edgetune.benchmarks.config import PipelineConfig
    from edgetune.benchmarks.pipeline import run_pipeline

    report = run_pipeline(config_from_args(PipelineConfig, args))
    print(report.read_text())
    print(f"report: {report}")
    return 0
