"""Which files train, validate and test a run: deterministic by file, written into the run dir.

Layouts of `--data DIR`:
  DIR/train + DIR/validation (or val) [+ DIR/test]  as given; without test/, a stratified, seeded
                                                    `holdout_fraction` of validation becomes the test
                                                    split (the tutorial takes 20% of its validation set)
  DIR/train + DIR/test                              validation is held out of train
  DIR/<class>/...                                   one tree: test held out first, then validation
Later parity benchmarks read exactly these lists back (`edgetune.contract.read_split`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from edgetune import UserError
from edgetune.contract import write_split
from edgetune.train.duplicates import DuplicateReport, find_duplicates
from edgetune.train.folders import ImageCheck, hashed_images, list_classes, require_usable, scan_tree, stratified_split

VALIDATION_NAMES = ("validation", "val")


@dataclass
class Sample:
    path: Path
    label: int


@dataclass
class Splits:
    root: Path
    classes: list[str]
    train: list[Sample] = field(default_factory=list)
    val: list[Sample] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)
    skipped: list[ImageCheck] = field(default_factory=list)
    duplicates: DuplicateReport | None = None
    """Exact and near duplicates among every scanned file (`edgetune.train.duplicates`)."""
    leaks: dict[str, list[tuple[Path, Path]]] = field(default_factory=dict)
    """Per held-out split (val, test): (image, its closest exact or near copy in train)."""

    def write(self, folder: Path) -> None:
        """splits/{train,val,test}.txt with `path relative to root<TAB>label` lines."""
        for name in ("train", "val", "test"):
            items = [(s.path.relative_to(self.root).as_posix(), self.classes[s.label]) for s in getattr(self, name)]
            write_split(folder / f"{name}.txt", items)


def detect_layout(data: Path) -> dict[str, Path]:
    """Map split names to class-folder trees; a single tree is returned as {'all': data}."""
    data = Path(data)
    if not data.is_dir():
        raise UserError(f"data folder {data} does not exist")
    if (data / "train").is_dir():
        out = {"train": data / "train"}
        for name in VALIDATION_NAMES:
            if (data / name).is_dir():
                out["val"] = data / name
                break
        if (data / "test").is_dir():
            out["test"] = data / "test"
        return out
    return {"all": data}


def make_splits(data: Path, holdout_fraction: float = 0.2, seed: int = 0, progress: bool = True) -> Splits:
    """Scan and check every image, skip unreadable ones (with a warning), and assign splits.

    Held-out images are carved group-aware: exact and near duplicates stay on one side. Splits the
    user gave are kept as they are, and a warning names held-out images that have a copy in train.
    """
    data = Path(data).resolve()
    layout = detect_layout(data)
    first = layout.get("train", layout.get("all"))
    classes = list_classes(first)
    reports = {}
    for name, tree in layout.items():
        tree_classes = list_classes(tree)
        if tree_classes != classes:
            raise UserError(f"{tree} has classes {tree_classes}, but {first} has {classes}: they must match")
        reports[name] = scan_tree(tree, classes, progress=progress)
        require_usable(reports[name], what=f"{name} split ({tree})")
    good = {name: r.good_files() for name, r in reports.items()}
    splits = Splits(root=data, classes=classes, skipped=[x for r in reports.values() for x in r.bad])
    splits.duplicates = find_duplicates(hashed_images(reports))
    groups = splits.duplicates.group_ids()

    def carve(items: dict, seed_: int) -> tuple[dict, dict]:
        return stratified_split(items, holdout_fraction, seed_, groups)

    if "all" in layout:
        rest, test = carve(good["all"], seed)
        train, val = carve(rest, seed + 1)
    else:
        train = good["train"]
        if "val" in good and "test" in good:
            val, test = good["val"], good["test"]
        elif "val" in good:
            val, test = carve(good["val"], seed)
        elif "test" in good:
            train, val = carve(good["train"], seed)
            test = good["test"]
        else:
            rest, test = carve(good["train"], seed)
            train, val = carve(rest, seed + 1)
    for name, parts in (("train", train), ("val", val), ("test", test)):
        samples = [Sample(x.path, classes.index(c)) for c in classes for x in parts[c]]
        if not samples:
            raise UserError(f"the {name} split of {data} is empty: add images or lower --holdout-fraction")
        setattr(splits, name, samples)
    splits.leaks = find_leaks(splits)
    warn_leaks(splits)
    return splits


def find_leaks(splits: Splits) -> dict[str, list[tuple[Path, Path]]]:
    """Per held-out split: (image, closest exact or near copy in train), from `splits.duplicates`."""
    if splits.duplicates is None:
        return {}
    split_of = {str(s.path): name for name in ("train", "val", "test") for s in getattr(splits, name)}
    report = splits.duplicates
    leaks: dict[str, list[tuple[Path, Path]]] = {"val": [], "test": []}
    for held, trained, _ in report.cross_split(split_of=split_of):
        leaks[split_of[str(report.items[held].path)]].append((report.items[held].path, report.items[trained].path))
    return leaks


def warn_leaks(splits: Splits) -> None:
    """One warning when validation or test images have an exact or near copy in training."""
    parts = [f"{len(v)} of {len(getattr(splits, k))} {'validation' if k == 'val' else k} images"
             for k, v in splits.leaks.items() if v]
    if parts:
        example = next(pair for v in splits.leaks.values() for pair in v)
        warnings.warn(f"{' and '.join(parts)} have an exact or near-duplicate copy in training (e.g. {example[0]} ~ "
                      f"{example[1]}): their accuracy is optimistic. `edgetune data check {splits.root}` lists them; "
                      "move or remove the copies, or give one class-folder tree and let edgetune split it "
                      "(duplicates then stay on one side)", stacklevel=3)
