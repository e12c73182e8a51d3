"""Image class folders: scan, check, split. Lean (Pillow + numpy) so `edgetune data` never loads TensorFlow.

A class-folder tree is `ROOT/<class>/<image>`; a data set folder holds `train/` plus `validation/`
and/or `test/` trees, or is itself a single tree that training splits deterministically.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetune import UserError
from edgetune.contract import sha256_file
from edgetune.runtime.image import IMAGE_SUFFIXES, ImageError, load_image, suffix_summary, walk_files, warn_not_regular
from edgetune.train.duplicates import HashedImage, fingerprint

IMAGE_EXTENSIONS = set(IMAGE_SUFFIXES)
MIN_SIDE = 32  # smaller images are legal but carry almost no signal at 160 px: reported as "tiny"


@dataclass
class ImageCheck:
    """The result of decoding one file with the training decoder."""

    path: Path
    ok: bool
    reason: str = ""
    size: tuple[int, int] = (0, 0)
    """(width, height) after the EXIF orientation is applied."""
    digest: str = ""
    """sha256 of the file's bytes (exact duplicates)."""
    phash: int | None = None
    """Perceptual hash of the decoded image (near duplicates); None when it does not decode."""
    thumb: np.ndarray | None = field(default=None, repr=False)
    """32x32 grayscale thumbnail (confirms near duplicates); None when it does not decode."""


@dataclass
class TreeReport:
    """What `edgetune data check` prints: counts, bad files, tiny images, imbalance."""

    root: Path
    classes: dict[str, list[ImageCheck]] = field(default_factory=dict)
    non_images: list[Path] = field(default_factory=list)
    not_regular: list[Path] = field(default_factory=list)
    """FIFOs, sockets, devices and broken links under the class folders: skipped, never opened."""

    @property
    def counts(self) -> dict[str, int]:
        return {c: sum(1 for x in items if x.ok) for c, items in self.classes.items()}

    @property
    def bad(self) -> list[ImageCheck]:
        return [x for items in self.classes.values() for x in items if not x.ok]

    @property
    def tiny(self) -> list[ImageCheck]:
        return [x for items in self.classes.values() for x in items if x.ok and min(x.size) < MIN_SIDE]

    @property
    def imbalance(self) -> float:
        """Largest class count over smallest (1.0 = balanced, inf when a class has no good image)."""
        counts = [n for n in self.counts.values()]
        return max(counts) / min(counts) if counts and min(counts) > 0 else float("inf")

    def good_files(self) -> dict[str, list[ImageCheck]]:
        return {c: [x for x in items if x.ok] for c, items in self.classes.items()}

    def table(self) -> str:
        lines = [f"{'class':<24} {'images':>7} {'bad':>5} {'tiny':>5}"]
        for c, items in self.classes.items():
            good = sum(1 for x in items if x.ok)
            bad = sum(1 for x in items if not x.ok)
            tiny = sum(1 for x in items if x.ok and min(x.size) < MIN_SIDE)
            lines.append(f"{c:<24} {good:>7} {bad:>5} {tiny:>5}")
        lines.append(f"{'total':<24} {sum(self.counts.values()):>7} {len(self.bad):>5} {len(self.tiny):>5}")
        return "\n".join(lines)


def check_image(path: Path) -> ImageCheck:
    """Decode one file exactly as training will (`edgetune.runtime.image.load_image`), and hash it.

    A file that passes here decodes in training too: same function, same Pillow. A truncated JPEG,
    a decompression bomb or a FIFO fails here with a reason, not in the middle of training. The check
    decodes at full scale; a run with `--jpeg-draft` reads the same bytes through the same libjpeg,
    only scaling inside its IDCT, so it fails and passes on the same files (a truncated JPEG: both fail).
    """
    try:
        image = load_image(path)
    except ImageError as exc:
        return ImageCheck(path, False, reason=str(exc).removeprefix(f"{path}: "), digest=_digest(path) or "")
    digest = _digest(path)
    if digest is None:  # vanished or became unreadable between the decode and the hash
        return ImageCheck(path, False, reason="not readable")
    phash, thumb = fingerprint(image)
    return ImageCheck(path, True, size=(image.shape[1], image.shape[0]), digest=digest, phash=phash, thumb=thumb)


def _digest(path: Path) -> str | None:
    """sha256 of a regular file's bytes, or None (not a regular file, unreadable): never opens a FIFO."""
    try:
        return sha256_file(path) if stat.S_ISREG(os.stat(path).st_mode) else None
    except OSError:
        return None


def list_classes(root: Path) -> list[str]:
    """Sorted class folder names (hidden folders ignored), with a clear error for a bad root."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise UserError(f"{root} needs at least two class folders (ROOT/<class>/<image>), found {classes or 'none'}")
    return classes


def scan_tree(root: Path, classes: list[str] | None = None, workers: int | None = None, progress: bool = False) -> TreeReport:
    """Decode and hash every file under each class folder of `root` and report what is usable."""
    root = Path(root)
    classes = classes or list_classes(root)
    report = TreeReport(root)
    todo: list[tuple[str, Path]] = []
    for c in classes:
        folder = root / c
        if not folder.is_dir():
            raise UserError(f"class folder {folder} is missing (classes must match across splits: {classes})")
        files, odd = walk_files(folder, None)
        report.not_regular += [Path(p) for p in odd]
        for p in map(Path, files):
            (todo.append((c, p)) if p.suffix.lower() in IMAGE_EXTENSIONS else report.non_images.append(p))
        report.classes[c] = []
    warn_not_regular(report.not_regular, str(root))
    # Pillow releases the GIL while decoding: threads use every core.
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
        results = pool.map(check_image, [p for _, p in todo])
        if progress:
            from edgetune._progress import progress_bar

            results = progress_bar(results, total=len(todo), desc=f"checking {root.name}", unit="img")
        for (c, _), res in zip(todo, results):
            report.classes[c].append(res)
    return report


def hashed_images(reports: Mapping[str, TreeReport]) -> list[HashedImage]:
    """Every file of the scanned trees ({split name: report}) as duplicate search sees it (unreadable ones too)."""
    return [HashedImage(x.path, c, split, x.digest, x.phash, x.thumb)
            for split, r in reports.items() for c, items in r.classes.items() for x in items if x.digest]


def require_usable(report: TreeReport, what: str = "data") -> None:
    """Raise a UserError for an empty class; warn (listing them) about files that will be skipped."""
    empty = [c for c, n in report.counts.items() if n == 0]
    if empty:
        raise UserError(f"{what}: class folder(s) {empty} under {report.root} have no readable images "
                        f"({empty[0]}: {suffix_summary(report.root / empty[0])})")
    if report.bad:
        listing = "\n  ".join(f"{x.path}: {x.reason}" for x in report.bad[:20])
        more = f"\n  ... and {len(report.bad) - 20} more" if len(report.bad) > 20 else ""
        warnings.warn(f"{what}: skipping {len(report.bad)} unreadable file(s):\n  {listing}{more}", stacklevel=2)


def stratified_split(items: dict[str, list], fraction: float, seed: int,
                     groups: Mapping[str, int] | None = None) -> tuple[dict[str, list], dict[str, list]]:
    """Split each class's items into (kept, held_out) with `fraction` held out, seeded and group-aware.

    Deterministic by file: the same files and seed always give the same split, whatever the order
    the file system lists them in. Items of one duplicate group (`groups`: str(path) -> group id,
    e.g. `DuplicateReport.group_ids()`) always land on the same side, also across classes: a group
    is placed where its first file falls in the class's shuffled order, and the cut is the group
    boundary closest to the target count. Without groups this is exactly a per-class shuffle and
    cut. At least one item per class is held out when fraction > 0, and one kept, when the groups allow.
    """
    if not 0.0 < fraction < 1.0:
        raise UserError(f"split fraction must be between 0 and 1 (exclusive), got {fraction}")
    groups = groups or {}
    decided: dict[object, bool] = {}  # unit key -> held out (a group spanning classes is decided once)
    kept, held = {}, {}
    for c, xs in items.items():
        order = sorted(xs, key=str_key)
        random.Random(f"{seed}:{c}").shuffle(order)
        units: dict[object, list] = {}
        for x in order:
            key = ("group", groups[str_key(x)]) if str_key(x) in groups else ("file", str_key(x))
            units.setdefault(key, []).append(x)
        n_held = max(1, round(len(order) * fraction)) if len(order) > 1 else 0
        pre_held = sum(len(u) for k, u in units.items() if decided.get(k) is True)
        pre_kept = sum(len(u) for k, u in units.items() if decided.get(k) is False)
        free = [k for k in units if k not in decided]
        cut = _cut([len(units[k]) for k in free], n_held - pre_held, pre_held, pre_kept)
        if n_held and pre_held + sum(len(units[k]) for k in free[:cut]) == 0:
            # One group holds (nearly) the whole class: nothing can be held out whole. Split it by
            # file so the class is still measured; make_splits' leakage warning says what that costs.
            warnings.warn(f"class {c!r}: its {len(order)} images are near duplicates of each other (one group), "
                          "so none can be held out without a copy in training; holding out by file", stacklevel=2)
            held[c], kept[c] = sorted(order[:n_held], key=str_key), sorted(order[n_held:], key=str_key)
            continue
        for i, k in enumerate(free):
            decided[k] = i < cut
        held[c] = sorted((x for k, u in units.items() if decided[k] for x in u), key=str_key)
        kept[c] = sorted((x for k, u in units.items() if not decided[k] for x in u), key=str_key)
    return kept, held


def _cut(sizes: list[int], target: int, pre_held: int, pre_kept: int) -> int:
    """How many leading units to hold out: the count closest to `target`, keeping both sides non-empty if possible."""
    total = sum(sizes)
    cum = [0]
    for n in sizes:
        cum.append(cum[-1] + n)

    def score(k: int) -> tuple:
        held, kept = pre_held + cum[k], pre_kept + total - cum[k]
        return (kept == 0, held == 0 and total + pre_held + pre_kept > 1, abs(cum[k] - target), k)

    return min(range(len(sizes) + 1), key=score)


def str_key(x) -> str:
    return str(getattr(x, "path", x))


def split_folder(src: Path, dst: Path, test_fraction: float = 0.2, seed: int = 0, force: bool = False,
                 progress: bool = False) -> dict[str, tuple[int, int]]:
    """Copy a class-folder tree into DST/train/<class> and DST/test/<class>, stratified, group-aware and verified.

    Files are copied, never moved. Exact and near duplicates stay on one side (`stratified_split`
    with the groups of `find_duplicates`). DST must be new, empty, or (with `force`) an earlier
    `data split` output; it may not be, contain or lie inside SRC (`edgetune.outputs`). Everything
    is written into a temporary sibling, checked (every file present with its source's sha256) and
    only then swapped into place, so an interrupted or failed split leaves nothing that looks complete.
    Returns {class: (train_count, test_count)}.
    """
    from edgetune.outputs import check_output, staged_output
    from edgetune.train.duplicates import find_duplicates

    src, dst = Path(src), Path(dst)
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"split fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    classes = list_classes(src)
    check_output(dst, "split", inputs=[src], force=force)  # refuse before the (long) scan, not after
    report = scan_tree(src, classes, progress=progress)
    files = {c: [x.path for x in items] for c, items in report.classes.items()}
    empty = [c for c, xs in files.items() if not xs]
    if empty:
        raise UserError(f"class folder(s) {empty} under {src} hold no image files ({suffix_summary(src / empty[0])})")
    groups = find_duplicates(hashed_images({"all": report})).group_ids()
    train, test = stratified_split(files, test_fraction, seed, groups)
    with staged_output(dst, "split", inputs=[src], force=force) as tmp:
        expected: dict[Path, str] = {}
        for split, parts in (("train", train), ("test", test)):
            for c, paths in parts.items():
                for p in paths:
                    target = tmp / split / c / p.relative_to(src / c)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(p, target)
                    expected[target.relative_to(tmp)] = sha256_file(p)
        written = {p.relative_to(tmp) for split in ("train", "test") for p in (tmp / split).rglob("*") if p.is_file()}
        if written != set(expected):
            raise UserError(f"the copy under {dst} has {len(written)} files, expected {len(expected)}: is something "
                            "else writing there?")
        for rel, digest in expected.items():
            if sha256_file(tmp / rel) != digest:
                raise UserError(f"the copy of {rel} differs from its source: the disk under {dst} may be failing")
    return {c: (len(train[c]), len(test[c])) for c in classes}
