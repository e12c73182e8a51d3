"""Fetch, split and check image-folder data sets (never loads TensorFlow).

  edgetune data fetch cats-vs-dogs [--from PATH]   download (or copy) and verify into the cache
  edgetune data split SRC --out DST                 copy a class-folder tree into DST/train and DST/test
  edgetune data check DIR                           counts, unreadable files, tiny images, imbalance
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgetune import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="data_command", metavar="<action>", required=True)

    f = sub.add_parser("fetch", help="download the tutorial data set into the cache ($EDGETUNE_HOME)")
    f.add_argument("name", choices=["cats-vs-dogs"], help="data set name")
    f.add_argument("--from", dest="source", type=Path, help="local .zip or extracted folder to use instead of downloading")
    f.add_argument("--force", action="store_true", help="fetch again even when the cache has a verified copy")

    s = sub.add_parser("split", help="copy one class-folder tree into DST/train and DST/test, stratified and verified")
    s.add_argument("src", type=Path, help="class-folder tree SRC/<class>/<image>")
    s.add_argument("--out", type=Path, required=True, help="destination folder (must be empty unless --force)")
    s.add_argument("--test-fraction", type=float, default=0.2, help="fraction of each class copied to test/ (default: 0.2)")
    s.add_argument("--seed", type=int, default=0, help="seed of the per-class shuffle (default: 0)")
    s.add_argument("--force", action="store_true", help="replace a non-empty --out")

    c = sub.add_parser("check", help="report per-class counts, unreadable files, tiny images and imbalance")
    c.add_argument("dir", type=Path, help="a class-folder tree, or a data folder with train/ validation/ test/")


def run(args: argparse.Namespace) -> int:
    if args.data_command == "fetch":
        from edgetune.train.datasets import fetch

        path = fetch(args.name, source=args.source, force=args.force)
        print(path)
        return 0
    if args.data_command == "split":
        from edgetune.train.folders import split_folder

        counts = split_folder(args.src, args.out, args.test_fraction, args.seed, args.force)
        print(f"{'class':<24} {'train':>7} {'test':>7}")
        for name, (n_train, n_test) in counts.items():
            print(f"{name:<24} {n_train:>7} {n_test:>7}")
        print(f"{'total':<24} {sum(a for a, _ in counts.values()):>7} {sum(b for _, b in counts.values()):>7}")
        print(f"copied and verified (sha256) into {args.out}")
        return 0
    if args.data_command == "check":
        return _check(args.dir)
    raise UserError(f"unknown action {args.data_command}")


def _check(root: Path) -> int:
    from edgetune.train.folders import MIN_SIDE, scan_tree
    from edgetune.train.splits import detect_layout

    layout = detect_layout(root)
    problems = 0
    for split, tree in layout.items():
        report = scan_tree(tree, progress=True)
        print(f"== {split}: {tree}")
        print(report.table())
        for x in report.bad:
            print(f"  unreadable: {x.path}: {x.reason}")
        for x in report.tiny:
            print(f"  tiny (< {MIN_SIDE} px): {x.path} {x.size[0]}x{x.size[1]}")
        for p in report.non_images:
            print(f"  not an image file (ignored): {p}")
        if report.imbalance > 1.5:
            print(f"  imbalance: largest/smallest class = {report.imbalance:.2f}")
        empty = [c for c, n in report.counts.items() if n == 0]
        if empty:
            print(f"  empty class(es): {empty}")
        problems += len(report.bad) + len(empty)
    print("OK" if problems == 0 else f"{problems} problem(s) found")
    return 0 if problems == 0 else 1
