"""Export a trained run to TFLite and ONNX presets, each verified against the Keras model.

Every preset is converted from the run's deployment SavedModel, loaded by the edgetune runtime,
compared with Keras on every held-out image of the run (splits/val.txt + splits/test.txt: top-1
agreement and accuracy drop with 95% intervals, |Δ probability|) and judged: pass, fail (the evidence
says it is below its agreement floor or over the --max-drop budget) or inconclusive (too few images to
tell). Passing and inconclusive models go to RUN_DIR/export/<preset>.tflite|.onnx with <preset>.json
beside it; failing ones to export/failed/. Integer presets get a contact sheet of the images whose
answer changed (export/flips/<preset>.png). The summary lists what did not pass, reason first; the
command exits 1 when a preset failed or errored, or when no integer model passed.
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
    from edgetune.convert.exporter import convert_run
    from edgetune.convert.report import problems, summary_table

    rows = convert_run(cfg)
    lines = problems(rows, cfg.max_drop)
    for line in lines:
        print(line)
    if lines:
        print()
    print(summary_table(rows))
    return exit_code(rows)


def exit_code(rows) -> int:
    """1 when a preset failed or errored, or when integer presets were asked for and none passed; else 0."""
    integer = [r for r in rows if r.integer]
    no_integer = bool(integer) and not any(r.status == "ok" for r in integer)
    return 1 if no_integer or any(r.status in ("failed", "error") for r in rows) else 0
