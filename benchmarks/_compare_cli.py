"""Merge `edgetune bench` results from several devices into one table, recommendations and plots.

  edgetune compare results/workstation-cpu.json results/pi5-pi.json --out results/compare
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgetune._config import add_config_args, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edgetune.benchmarks.config import CompareConfig

    parser.add_argument("results", nargs="+", type=Path, metavar="RESULTS_JSON")
    add_config_args(parser, CompareConfig)


def run(args: argparse.Namespace) -> int:
    from edgetune.benchmarks.compare import run_compare
    from edgetune.benchmarks.config import CompareConfig

    cfg = config_from_args(CompareConfig, args)
    text, plots = run_compare(cfg.results, cfg.out, cfg.baseline, cfg.threads)
    print(text.split("## Plots")[0].rstrip())
    print(f"\nreport: {Path(cfg.out) / 'compare.md'}; plots: {', '.join(str(p) for p in plots) or 'none (needs matplotlib)'}")
    return 0
