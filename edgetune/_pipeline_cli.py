"""Train -> convert (all presets) -> parity vs Keras -> latency on this machine -> RUN_DIR/report.md.

  edgetune pipeline                       # the tutorial's cats-vs-dogs, default recipe
  edgetune pipeline --data DIR --out runs/mine
  edgetune pipeline --quick --out runs/smoke

A second call with the same --out continues: a complete training run is reused, an interrupted one
resumed, and only the presets not converted yet are converted. The report's first lines say which
presets failed the accuracy gate or were inconclusive; the exit code is 1 when no integer model
stayed within the accuracy budget (the report is written first).
"""

from __future__ import annotations

import argparse

from edgetune._config import add_config_args, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edgetune.pipeline import PipelineConfig

    add_config_args(parser, PipelineConfig)


def run(args: argparse.Namespace) -> int:
    from edgetune.pipeline import PipelineConfig, run_pipeline

    result = run_pipeline(config_from_args(PipelineConfig, args))
    print(result.report.read_text())
    print(f"report: {result.report}")
    return result.exit_code
