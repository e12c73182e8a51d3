"""Export a trained run to TFLite and ONNX presets, each verified against the Keras model.

Every preset is converted from the run's deployment SavedModel, loaded by the edgetune runtime,
compared with Keras on the run's test split (top-1 agreement, |Δ probability|, accuracy) and only
then placed in RUN_DIR/export/<preset>.tflite|.onnx with <preset>.json beside it. Presets below
their agreement floor go to export/failed/ and the command exits 1 after finishing the others.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgetune._config import add_config_args, config_from_args
from edgetune.convert.config import ConvertConfig
from edgetune.convert.presets import describe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "presets:\n" + describe()
    parser.add_argument("run", type=Path, nargs="?", help="run dir of `edgetune train` (or its model.keras)")
    parser.add_argument("--list", action="store_true", help="list the presets and exit")
    add_config_args(parser, ConvertConfig)


def run(args: argparse.Namespace) -> int:
    if args.list:
        print(describe())
        return 0
    from edgetune import UserError

    if args.run is None:
        raise UserError("give a run dir (see edgetune convert --help), or --list")
    cfg = config_from_args(ConvertConfig, args, run=args.run)
    cfg.validate()
    from edgetune.convert.exporter import convert_run, summary_table

    rows = convert_run(cfg)
    print(summary_table(rows))
    for r in rows:
        if r.status != "ok":
            print(f"{r.preset}: {r.status}: {r.detail}")
    return 0 if all(r.status == "ok" for r in rows) else 1
