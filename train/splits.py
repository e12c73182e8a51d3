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

from dataclasses import dataclass, field
from pathlib import Path

from edgetune import UserError
from edgetune.contract import write_split
from edgetune.train.folders import ImageCheck, list_classes, require_usable, scan_tree, stratified_split

VALIDATION_NAMES = ("validation", "val")


@dataclass
class Sample:
    path: Path
    label: int
    orientation: int = 1


@dataclass
class Splits:
    root: Path
    classes: list[str]
    train: list[Sample] = field(default_factory=list)
    val: list[Sample] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)
    skipped: list[ImageCheck] = field(default_factory=list)

    def write(self, folder: Path) -> None:
        """splits/{train,val,test}.txt with `path relative to root<TAB>label` lines."""
        for name in ("train", "val", "test"):
            items = [(s.path.relative_to(self.root).as_posix(), self.classes[s.label]) for s in getattr(self, name)]
            write_split(folder / f"{name}.txt", items)

    def counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for name in ("train", "val", "test"):
            per = {c: 0 for c in self.classes}
            for s in getattr(self, name):
                per[self.classes[s.label]] += 1
            out[name] = per
        return out


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
    """Scan and check every image, skip unreadable ones (with a warning), and assign splits."""
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

    if "all" in layout:
        rest, test = stratified_split(good["all"], holdout_fraction, seed)
        train, val = stratified_split(rest, holdout_fraction, seed + 1)
    else:
        train = good["train"]
        if "val" in good and "test" in good:
            val, test = good["val"], good["test"]
        elif "val" in good:
            val, test = stratified_split(good["val"], holdout_fraction, seed)
        elif "test" in good:
            train, val = stratified_split(good["train"], holdout_fraction, seed)
            test = good["test"]
        else:
            rest, test = stratified_split(good["train"], holdout_fraction, seed)
            train, val = stratified_split(rest, holdout_fraction, seed + 1)
    for name, groups in (("train", train), ("val", val), ("test", test)):
        samples = [Sample(x.path, classes.index(c), x.orientation) for c in classes for x in groups[c]]
        if not samples:
            raise UserError(f"the {name} split of {data} is empty: add images or lower --holdout-fraction")
        setattr(splits, name, samples)
    return splits
