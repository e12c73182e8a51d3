"""The one command line: `edgetune <stage> ...`.

Every stage registers its flags from a lean `_cli` module; the stage's heavy code (TensorFlow for
train/convert) is imported only inside `run`, after its subcommand is chosen, so `edgetune predict`
and `edgetune bench` on a Raspberry Pi never load TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from edgetune import UserError, __version__
from edgetune._console import QuietConsole, edgetune_warnings
from edgetune._memory import keep_freed_memory
from edgetune.contract import ContractError

# subcommand -> (lean module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("edgetune.train._data_cli", "fetch, split and check image-folder data sets"),
    "train": ("edgetune.train._cli", "two-stage MobileNetV2 fine-tuning into a run dir"),
    "convert": ("edgetune.convert._cli", "export a run to TFLite/ONNX presets, each verified against Keras"),
    "predict": ("edgetune.runtime._cli", "classify images with an exported .tflite/.onnx model (no TensorFlow)"),
    "stream": ("edgetune.runtime._stream_cli", "classify a camera, video or image folder live, newest frame first"),
    "bench": ("edgetune.benchmarks._cli", "parity vs Keras and latency of exported models, one versioned results JSON"),
    "compare": ("edgetune.benchmarks._compare_cli", "merge bench results of several devices: table, plots, recommendation"),
    "bundle": ("edgetune._bundle_cli", "one folder for a Raspberry Pi: the model, its contract, images and the edgetune wheel"),
    "pipeline": ("edgetune._pipeline_cli", "train -> convert -> parity -> latency -> report.md in one command"),
}


# Heavy stages: their native TensorFlow logs are filtered unless --verbose, and they need an extra.
HEAVY = {"train": "train", "convert": "train", "pipeline": "train", "bench": None}
EXTRA_OF = {"tensorflow": "train", "keras": "train", "tf_keras": "train", "tensorflow_model_optimization": "train",
            "tf2onnx": "train", "onnx": "train", "matplotlib": "train", "tqdm": "train", "onnxruntime": "onnx",
            "cv2": "camera", "picamera2": "camera"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgetune",
        description="Fine-tune MobileNetV2 on image folders, export to TFLite/ONNX, run and benchmark on the edge.",
        epilog="Global options go before the stage: edgetune --verbose pipeline ...",
    )
    parser.add_argument("--version", action="version", version=f"edgetune {__version__}")
    parser.add_argument("--verbose", dest="verbose_logs", action="store_true",
                        help="show TensorFlow's and the converters' own log lines (quiet by default)")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", metavar="<stage>")
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # keep the docstring's layout
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _require_extra(command: str) -> None:
    """A base install (no [train] extra) gets one line naming the extra, not a ModuleNotFoundError."""
    extra = HEAVY.get(command)
    if extra is None:
        return
    missing = [m for m in ("tensorflow", "keras") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"`edgetune {command}` needs the [{extra}] extra ({', '.join(missing)} not installed): "
                        f"pip install 'edgetune[{extra}]'")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    keep_freed_memory()
    debug = args.debug or bool(os.environ.get("EDGETUNE_DEBUG"))
    verbose = args.verbose_logs or bool(os.environ.get("EDGETUNE_VERBOSE"))
    console = QuietConsole().start() if args.command in HEAVY and not verbose else None
    edgetune_warnings(args.command, verbose)
    try:
        _require_extra(args.command)
        return int(args._run(args) or 0)
    except (UserError, ContractError) as exc:
        _error(args.command, str(exc))
        return 2
    except KeyboardInterrupt:
        _error(args.command, "interrupted", prefix="")
        return 130
    except ModuleNotFoundError as exc:
        if debug:
            raise
        top = (exc.name or "").split(".")[0]
        extra = EXTRA_OF.get(top)
        hint = f": pip install 'edgetune[{extra}]'" if extra else ""
        _error(args.command, f"{top or exc} is not installed{hint}")
        return 2
    except OSError as exc:
        if debug:
            raise
        # The environment, not a bug: a full or read-only disk, a permission, a file that vanished mid-run.
        where = f" ({exc.filename})" if exc.filename else ""
        _error(args.command, f"{exc.strerror or exc}{where}")
        return 1
    except Exception as exc:
        if debug:
            raise
        message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        _error(args.command, f"unexpected {type(exc).__name__}: {message} (rerun with `edgetune --debug "
                             f"{args.command} ...` for the traceback, and please report it)")
        return 1
    finally:
        if console is not None:
            console.restore()


def _error(command: str, message: str, prefix: str = "error: ") -> None:
    print(f"edgetune {command}: {prefix}{message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
