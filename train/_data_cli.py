"""Fetch, split and check image-folder data sets (never loads TensorFlow).

  edgetune data fetch cats-vs-dogs [--from PATH]   download (or copy) and verify into the cache
  edgetune data split SRC --out DST                 copy a class-folder tree into DST/train and DST/test
                                                    (duplicates stay on one side)
  edgetune data check DIR                           counts, unreadable files, tiny images, imbalance,
                                                    exact and near duplicates, label conflicts, leakage

`data check` decodes every file with the decoder training and the runtime use, so a file it passes
trains. Near duplicates: perceptual hashes (pHash) close, and 32x32 grayscale thumbnails that
correlate at --similarity or more (see edgetune.train.duplicates).
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

    s = sub.add_parser("split", help="copy one class-folder tree into DST/train and DST/test, stratified, "
                                     "duplicate-aware and verified")
    s.add_argument("src", type=Path, help="class-folder tree SRC/<class>/<image>")
    s.add_argument("--out", type=Path, required=True,
                   help="destination folder: new or empty (or an earlier `data split` output with --force); "
                        "never inside SRC, never containing it")
    s.add_argument("--test-fraction", type=float, default=0.2, help="fraction of each class copied to test/ (default: 0.2)")
    s.add_argument("--seed", type=int, default=0, help="seed of the per-class shuffle (default: 0)")
    s.add_argument("--force", action="store_true", help="replace an earlier `edgetune data split` output at --out")

    c = sub.add_parser("check", help="report per-class counts, unreadable files, tiny images, imbalance and duplicates")
    c.add_argument("dir", type=Path, help="a class-folder tree, or a data folder with train/ validation/ test/")
    c.add_argument("--similarity", type=float, default=None,
                   help="thumbnail correlation (0..1) from which two images with close perceptual hashes "
                        "count as near duplicates (default: 0.90; lower finds more, with more false alarms)")


def run(args: argparse.Namespace) -> int:
    if args.data_command == "fetch":
        from edgetune.train.datasets import fetch

        path = fetch(args.name, source=args.source, force=args.force)
        print(path)
        return 0
    if args.data_command == "split":
        from edgetune.train.folders import split_folder

        counts = split_folder(args.src, args.out, args.test_fraction, args.seed, args.force, progress=True)
        print(f"{'class':<24} {'train':>7} {'test':>7}")
        for name, (n_train, n_test) in counts.items():
            print(f"{name:<24} {n_train:>7} {n_test:>7}")
        print(f"{'total':<24} {sum(a for a, _ in counts.values()):>7} {sum(b for _, b in counts.values()):>7}")
        print(f"copied and verified (sha256) into {args.out}")
        return 0
    if args.data_command == "check":
        return _check(args.dir, args.similarity)
    raise UserError(f"unknown action {args.data_command}")


def _check(root: Path, similarity: float | None = None) -> int:
    from edgetune.runtime.image import suffix_summary
    from edgetune.train.duplicates import MIN_SIMILARITY, describe, find_duplicates
    from edgetune.train.folders import MIN_SIDE, hashed_images, scan_tree
    from edgetune.train.splits import detect_layout

    similarity = MIN_SIMILARITY if similarity is None else similarity
    if not 0.0 < similarity <= 1.0:
        raise UserError(f"--similarity must be in (0, 1], got {similarity}")
    layout = detect_layout(root)
    problems = 0
    reports = {}
    for split, tree in layout.items():
        report = reports[split] = scan_tree(tree, progress=True)
        print(f"== {split}: {tree}")
        print(report.table())
        for x in report.bad:
            print(f"  unreadable: {x.path}: {x.reason}")
        for x in report.tiny:
            print(f"  tiny (< {MIN_SIDE} px): {x.path} {x.size[0]}x{x.size[1]}")
        for p in report.non_images:
            print(f"  not an image file (ignored): {p}")
        for p in report.not_regular:
            print(f"  not a regular file (skipped): {p}")
        if report.imbalance > 1.5:
            print(f"  imbalance: largest/smallest class = {report.imbalance:.2f}")
        empty = [c for c, n in report.counts.items() if n == 0]
        for c in empty:
            print(f"  empty class: {c} ({suffix_summary(tree / c)})")
        problems += len(report.bad) + len(empty)
    dups = find_duplicates(hashed_images(reports), similarity)
    print("== duplicates")
    for line in describe(dups):
        print(line)
    # Duplicates inside a class only inflate counts (a group-aware split keeps them on one side);
    # the same bytes under two labels, or a held-out image copied in train, make results wrong.
    problems += len(dups.label_conflicts()) + len(dups.cross_split())
    print("OK" if problems == 0 else f"{problems} problem(s) found")
    return 0 if problems == 0 else 1
