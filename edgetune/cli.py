"""The one command line: `edgetune <stage> ...`.

Every stage registers its flags from a lean `_cli` module; the stage's heavy code (TensorFlow for
train/convert) is imported only inside `run`, after its subcommand is chosen, so `edgetune predict`
and `edgetune bench` on a Raspberry Pi never load TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from edgetune import UserError, __version__
from edgetune.contract import ContractError

# subcommand -> (lean module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("edgetune.train._data_cli", "fetch, split and check image-folder data sets"),
    "train": ("edgetune.train._cli", "two-stage MobileNetV2 fine-tuning into a run dir"),
    "convert": ("edgetune.convert._cli", "export a run to TFLite/ONNX presets, each verified against Keras"),
    "predict": ("edgetune.runtime._cli", "classify images with an exported .tflite/.onnx model (no TensorFlow)"),
    "bench": ("edgetune.benchmarks._cli", "parity vs Keras and latency of exported models, one versioned results JSON"),
    "compare": ("edgetune.benchmarks._compare_cli", "merge bench results of several devices: table, plots, recommendation"),
    "pipeline": ("edgetune.benchmarks._pipeline_cli", "train -> convert -> parity -> latency -> report.md in one command"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgetune",
        description="Fine-tune MobileNetV2 on image folders, export to TFLite/ONNX, run and benchmark on the edge.",
    )
    parser.add_argument("--version", action="version", version=f"edgetune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<stage>")
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # keep the docstring's layout
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (UserError, ContractError) as exc:
        print(f"edgetune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edgetune {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
