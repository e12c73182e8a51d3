"""One folder that takes a run's model to a Raspberry Pi: the model and its contract, images, the edgetune wheel.

  edgetune bundle runs/cats_vs_dogs                        # the recommended model -> runs/cats_vs_dogs-bundle
  edgetune bundle runs/cats_vs_dogs --out pi-bundle --preset tflite_int8,onnx_fp32
  edgetune bundle --verify pi-bundle                       # on the Pi: every file against manifest.json

On the Pi: `bash install.sh` in the copied folder makes a venv (~/edgetune) and installs edgetune into
it; README.txt in the folder has the commands for predict, bench and compare.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgetune._config import add_config_args, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edgetune.bundle import BundleConfig

    parser.add_argument("run", type=Path, nargs="?", metavar="RUN_DIR", help="the run dir (with export/) to bundle")
    add_config_args(parser, BundleConfig)


def run(args: argparse.Namespace) -> int:
    from edgetune import UserError
    from edgetune.bundle import BundleConfig, make_bundle, verify_bundle, verify_lines

    cfg = config_from_args(BundleConfig, args, run=args.run)
    if cfg.verify is not None:
        if cfg.run is not None:
            raise UserError("give either RUN_DIR (write a bundle) or --verify BUNDLE (check one), not both")
        report = verify_bundle(cfg.verify)
        for line in verify_lines(report):
            print(line if report.ok or line.startswith("note") else f"edgetune bundle: {line}",
                  file=sys.stdout if report.ok else sys.stderr)
        return 0 if report.ok else 1
    if cfg.run is None:
        raise UserError("give the run dir to bundle (edgetune bundle RUN_DIR), or --verify BUNDLE")
    s = make_bundle(cfg)
    print(f"bundle: {s.out} ({s.files} files, {s.bytes / 1e6:.1f} MB, {s.seconds:.0f} s)")
    print(f"  models: {', '.join(s.models)}: {s.reason}")
    print(f"  images: {f'{s.images} of the {s.split} split' if s.split else 'none'}; wheel: {s.wheel}")
    print(f"  on the Pi: copy the folder, then `bash install.sh` in it; the commands are in {s.out / 'README.txt'}")
    return 0
