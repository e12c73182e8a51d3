"""Image class folders: scan, check, split. Lean (Pillow only) so `edgetune data` never loads TensorFlow.

A class-folder tree is `ROOT/<class>/<image>`; a data set folder holds `train/` plus `validation/`
and/or `test/` trees, or is itself a single tree that training splits deterministically.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from edgetune import UserError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
MIN_SIDE = 32  # smaller images are legal but carry almost no signal at 160 px: reported as "tiny"
EXIF_ORIENTATION_TAG = 0x0112


@dataclass
class ImageCheck:
    """The result of decoding one file."""

    path: Path
    ok: bool
    reason: str = ""
    size: tuple[int, int] = (0, 0)
    orientation: int = 1
    """EXIF orientation code (1 = upright); training applies it like the runtime does."""


@dataclass
class TreeReport:
    """What `edgetune data check` prints: counts, bad files, tiny images, imbalance."""

    root: Path
    classes: dict[str, list[ImageCheck]] = field(default_factory=dict)
    non_images: list[Path] = field(default_factory=list)

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
    """Fully decode one image (a truncated JPEG fails here, not in the middle of training)."""
    try:
        with Image.open(path) as im:
            size = im.size
            orientation = int(im.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
            # draft() lets libjpeg decode at 1/8 scale: every byte is still read and checked,
            # at a fraction of the cost of a full decode.
            im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
            im.load()
        return ImageCheck(path, True, size=size, orientation=orientation if 1 <= orientation <= 8 else 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return ImageCheck(path, False, reason=f"{exc.__class__.__name__}: {exc}")


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
    """Decode every file under each class folder of `root` and report what is usable."""
    root = Path(root)
    classes = classes or list_classes(root)
    report = TreeReport(root)
    todo: list[tuple[str, Path]] = []
    for c in classes:
        folder = root / c
        if not folder.is_dir():
            raise UserError(f"class folder {folder} is missing (classes must match across splits: {classes})")
        for p in sorted(folder.rglob("*")):
            if not p.is_file() or p.name.startswith("."):
                continue
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                todo.append((c, p))
            else:
                report.non_images.append(p)
        report.classes[c] = []
    # Pillow releases the GIL while decoding: threads use every core.
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
        results = pool.map(check_image, [p for _, p in todo])
        if progress:
            from edgetune._progress import progress_bar

            results = progress_bar(results, total=len(todo), desc=f"checking {root.name}", unit="img")
        for (c, _), res in zip(todo, results):
            report.classes[c].append(res)
    return report


def require_usable(report: TreeReport, what: str = "data") -> None:
    """Raise a UserError for an empty class; warn (listing them) about files that will be skipped."""
    empty = [c for c, n in report.counts.items() if n == 0]
    if empty:
        raise UserError(f"{what}: class folder(s) {empty} under {report.root} have no readable images")
    if report.bad:
        listing = "\n  ".join(f"{x.path}: {x.reason}" for x in report.bad[:20])
        more = f"\n  ... and {len(report.bad) - 20} more" if len(report.bad) > 20 else ""
        warnings.warn(f"{what}: skipping {len(report.bad)} unreadable file(s):\n  {listing}{more}", stacklevel=2)


def stratified_split(items: dict[str, list], fraction: float, seed: int) -> tuple[dict[str, list], dict[str, list]]:
    """Split each class's (sorted) items into (kept, held_out) with `fraction` held out, seeded.

    Deterministic by file: the same files and seed always give the same split, whatever the order
    the file system lists them in. At least one item per class is held out when fraction > 0.
    """
    if not 0.0 < fraction < 1.0:
        raise UserError(f"split fraction must be between 0 and 1 (exclusive), got {fraction}")
    kept, held = {}, {}
    for c, xs in items.items():
        order = sorted(xs, key=lambda x: str(getattr(x, "path", x)))
        random.Random(f"{seed}:{c}").shuffle(order)
        n_held = max(1, round(len(order) * fraction)) if len(order) > 1 else 0
        held[c], kept[c] = sorted(order[:n_held], key=str_key), sorted(order[n_held:], key=str_key)
    return kept, held


def str_key(x) -> str:
    return str(getattr(x, "path", x))


def sha256_bytes(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def split_folder(src: Path, dst: Path, test_fraction: float = 0.2, seed: int = 0, force: bool = False) -> dict[str, tuple[int, int]]:
    """Copy a class-folder tree into DST/train/<class> and DST/test/<class>, stratified and verified.

    Files are copied, never moved. Everything is written to a temporary folder beside DST, checked
    (every file present with the same sha256, counts adding up) and only then renamed to DST, so a
    failure half-way leaves nothing behind. Returns {class: (train_count, test_count)}.
    """
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve() or dst.resolve().is_relative_to(src.resolve()):
        raise UserError(f"--out {dst} must not be inside the source folder {src}")
    classes = list_classes(src)
    files = {c: sorted(p for p in (src / c).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS) for c in classes}
    empty = [c for c, xs in files.items() if not xs]
    if empty:
        raise UserError(f"class folder(s) {empty} under {src} hold no image files")
    if dst.exists() and any(dst.iterdir()):
        if not force:
            raise UserError(f"{dst} is not empty; pass --force to replace it")
    train, test = stratified_split(files, test_fraction, seed)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        expected: dict[Path, str] = {}
        for split, groups in (("train", train), ("test", test)):
            for c, paths in groups.items():
                for p in paths:
                    target = tmp / split / c / p.relative_to(src / c)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(p, target)
                    expected[target.relative_to(tmp)] = sha256_bytes(p)
        written = [p for p in tmp.rglob("*") if p.is_file()]
        if len(written) != sum(len(v) for v in files.values()):
            raise RuntimeError(f"copied {len(written)} files, expected {sum(len(v) for v in files.values())}")
        for rel, digest in expected.items():
            if sha256_bytes(tmp / rel) != digest:
                raise RuntimeError(f"copy of {rel} differs from its source")
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {c: (len(train[c]), len(test[c])) for c in classes}
