"""Exact and near duplicates, label conflicts, the group-aware split and the leakage warning.

Generated images: distinct "scenes" (random shapes on random gradients) plus perturbed copies of
some of them (resized, re-encoded as JPEG, shifted by 2 % of the side, brightened, copied byte for
byte), so every test knows which files are duplicates of which.
"""

from __future__ import annotations

import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from edgetune.cli import main
from edgetune.train.duplicates import close_pairs, find_duplicates
from edgetune.train.folders import hashed_images, scan_tree, split_folder, stratified_split
from edgetune.train.splits import make_splits

SIDE = 96


def scene(seed: int) -> np.ndarray:
    """A distinct picture: a random gradient with a few random ellipses and boxes, plus mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    base = rng.uniform(40, 200, 3) + rng.uniform(-60, 60, 3) * yy[..., None] + rng.uniform(-60, 60, 3) * xx[..., None]
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = (int(v) for v in rng.integers(0, SIDE - 20, 2))
        x1, y1 = x0 + int(rng.integers(12, 50)), y0 + int(rng.integers(12, 50))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    arr = np.asarray(img).astype(np.int16) + rng.integers(-6, 7, (SIDE, SIDE, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


PERTURBATIONS = {
    "resized": lambda a: Image.fromarray(a).resize((SIDE * 2 // 3, SIDE * 2 // 3), Image.Resampling.BILINEAR),
    "jpeg": lambda a: Image.open(_jpeg_bytes(a, 60)),
    "shifted": lambda a: Image.fromarray(np.pad(a[:, 2:], ((0, 0), (0, 2), (0, 0)), mode="edge")),
    "brighter": lambda a: Image.fromarray(np.clip(a.astype(np.int16) + 25, 0, 255).astype(np.uint8)),
}


def _jpeg_bytes(a: np.ndarray, quality: int):
    import io

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return buf


def write_tree(root: Path, classes: dict[str, range], copies: dict[int, list[str]] | None = None) -> dict[str, int]:
    """Scenes `classes[c]` as root/c/s<seed>.png, plus perturbed copies; returns {relative path: scene seed}."""
    copies = copies or {}
    truth = {}
    for c, seeds in classes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for s in seeds:
            a = scene(s)
            Image.fromarray(a).save(root / c / f"s{s:03d}.png")
            truth[f"{c}/s{s:03d}.png"] = s
            for kind in copies.get(s, []):
                if kind == "exact":
                    shutil.copy(root / c / f"s{s:03d}.png", root / c / f"s{s:03d}_exact.png")
                    truth[f"{c}/s{s:03d}_exact.png"] = s
                else:
                    PERTURBATIONS[kind](a).convert("RGB").save(root / c / f"s{s:03d}_{kind}.png")
                    truth[f"{c}/s{s:03d}_{kind}.png"] = s
    return truth


def groups_by_scene(report, root: Path) -> list[set[str]]:
    return [{report.items[i].path.relative_to(root).as_posix() for i in g} for g in report.groups]


# ---------------------------------------------------------------- detection
def test_close_pairs_equals_brute_force():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64)
    hashes[50] = hashes[7] ^ np.uint64(0b1011)  # 3 bits apart
    hashes[200] = hashes[7]
    got = {(int(i), int(j), int(d)) for i, j, d in close_pairs(hashes, 12)}
    want = {(i, j, bin(int(hashes[i]) ^ int(hashes[j])).count("1")) for i in range(300) for j in range(i + 1, 300)
            if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= 12}
    assert got == want and (7, 50, 3) in got and (7, 200, 0) in got


def test_exact_and_near_duplicates_are_found_without_false_alarms(tmp_path):
    kinds = list(PERTURBATIONS) + ["exact"]
    copies = {s: [kinds[s % len(kinds)], kinds[(s + 2) % len(kinds)]] for s in range(0, 40, 3)}
    truth = write_tree(tmp_path / "t", {"a": range(0, 20), "b": range(20, 40)}, copies)
    report = find_duplicates(hashed_images({"all": scan_tree(tmp_path / "t")}))
    found = groups_by_scene(report, tmp_path / "t")
    expected = [{p for p, s in truth.items() if s == seed} for seed in sorted(copies)]
    # Every perturbed copy sits in its original's group, and no group mixes two scenes (40 distinct ones).
    assert sorted(map(sorted, found)) == sorted(map(sorted, expected))
    exact = [{report.items[i].path.name for i in g} for g in report.exact]
    assert sorted(map(sorted, exact)) == sorted([f"s{s:03d}.png", f"s{s:03d}_exact.png"] for s, k in copies.items() if "exact" in k)
    assert report.label_conflicts() == []


def test_data_check_reports_label_conflicts_and_near_duplicates_across_classes(tmp_path, capsys):
    root = tmp_path / "t"
    write_tree(root, {"a": range(0, 8), "b": range(8, 16)}, {3: ["jpeg"]})
    shutil.copy(root / "a" / "s001.png", root / "b" / "conflict.png")  # the same bytes under two labels
    PERTURBATIONS["brighter"](scene(2)).save(root / "b" / "s002_brighter.png")
    assert main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert "label conflict (same bytes in two classes)" in out and "conflict.png" in out
    assert "near duplicate across classes" in out and "s002_brighter.png" in out
    assert "near duplicate:" in out and "s003_jpeg.png" in out
    assert "1 problem(s) found" in out


# ---------------------------------------------------------------- group-aware split
def _plain_split(items: dict[str, list[Path]], fraction: float, seed: int):
    """The split edgetune made before it knew about duplicates (the reference without groups)."""
    kept, held = {}, {}
    for c, xs in items.items():
        order = sorted(xs, key=str)
        random.Random(f"{seed}:{c}").shuffle(order)
        n = max(1, round(len(order) * fraction)) if len(order) > 1 else 0
        held[c], kept[c] = sorted(order[:n], key=str), sorted(order[n:], key=str)
    return kept, held


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_split_without_duplicates_is_unchanged(seed):
    items = {c: [Path(f"/d/{c}/{i:03d}.jpg") for i in range(n)] for c, n in (("a", 37), ("b", 5), ("c", 1), ("d", 2))}
    assert stratified_split(items, 0.2, seed) == _plain_split(items, 0.2, seed)
    assert stratified_split(items, 0.2, seed, groups={}) == _plain_split(items, 0.2, seed)


def test_group_aware_split_keeps_every_group_on_one_side(tmp_path):
    copies = {s: ["resized", "jpeg", "shifted"] if s % 2 else ["exact", "brighter"] for s in range(0, 60, 4)}
    truth = write_tree(tmp_path / "t", {"a": range(0, 30), "b": range(30, 60)}, copies)
    report = find_duplicates(hashed_images({"all": scan_tree(tmp_path / "t")}))
    groups = report.group_ids()
    assert len(report.groups) == len(copies)
    files = {c: sorted((tmp_path / "t" / c).iterdir()) for c in ("a", "b")}
    for seed in range(6):
        kept, held = stratified_split(files, 0.25, seed, groups)
        side = {str(p): "held" for c in held for p in held[c]} | {str(p): "kept" for c in kept for p in kept[c]}
        for members in report.groups:
            assert len({side[str(report.items[i].path)] for i in members}) == 1, f"seed {seed}: a group was split"
        for c in files:
            assert sorted(kept[c] + held[c]) == files[c]
            assert abs(len(held[c]) - 0.25 * len(files[c])) <= 3  # a whole group may overshoot by its size
    assert stratified_split(files, 0.25, 3, groups) == stratified_split({c: files[c][::-1] for c in files}, 0.25, 3, groups)
    assert len(truth) == sum(len(v) for v in files.values())


def test_group_spanning_two_classes_lands_on_one_side():
    items = {"a": [Path(f"/d/a/{i}.png") for i in range(10)], "b": [Path(f"/d/b/{i}.png") for i in range(10)]}
    for seed in range(20):
        groups = {"/d/a/3.png": 0, "/d/b/3.png": 0, "/d/a/4.png": 0}
        kept, held = stratified_split(items, 0.3, seed, groups)
        sides = {p in held[p.parent.name] for p in (Path("/d/a/3.png"), Path("/d/b/3.png"), Path("/d/a/4.png"))}
        assert len(sides) == 1


def test_class_that_is_one_group_is_split_by_file_with_a_warning():
    items = {"a": [Path(f"/d/a/{i}.png") for i in range(10)], "b": [Path(f"/d/b/{i}.png") for i in range(10)]}
    groups = {f"/d/a/{i}.png": 0 for i in range(10)}
    with pytest.warns(UserWarning, match="class 'a': its 10 images are near duplicates"):
        kept, held = stratified_split(items, 0.2, 0, groups)
    assert len(held["a"]) == 2 and len(held["b"]) == 2


def test_make_splits_of_one_tree_has_no_leaks(tmp_path):
    write_tree(tmp_path / "t", {"a": range(0, 25), "b": range(25, 50)}, {s: ["jpeg", "resized"] for s in range(0, 50, 5)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no leakage warning: the split itself kept groups together
        splits = make_splits(tmp_path / "t", progress=False)
    assert splits.leaks == {"val": [], "test": []}
    assert len(splits.duplicates.groups) == 10


def test_train_warns_when_held_out_images_have_a_copy_in_training(tmp_path, capsys):
    data = tmp_path / "data"
    write_tree(data / "train", {"a": range(0, 10), "b": range(10, 20)})
    write_tree(data / "validation", {"a": range(20, 26), "b": range(26, 32)})
    PERTURBATIONS["jpeg"](scene(4)).save(data / "validation" / "a" / "leak_jpeg.png")
    shutil.copy(data / "train" / "b" / "s012.png", data / "validation" / "b" / "leak_exact.png")
    with pytest.warns(UserWarning, match=r"have an exact or near-duplicate copy in training") as record:
        splits = make_splits(data, progress=False)
    message = str(record[0].message)
    assert "leak_jpeg.png" in message or "leak_exact.png" in message
    leaked = {p.name: q.name for v in splits.leaks.values() for p, q in v}
    assert leaked == {"leak_jpeg.png": "s004.png", "leak_exact.png": "s012.png"}
    assert main(["data", "check", str(data)]) == 1
    out = capsys.readouterr().out
    assert "leakage: 2 held-out image(s)" in out and "(same bytes)" in out


def test_data_split_keeps_duplicate_groups_on_one_side(tmp_path):
    copies = {s: ["jpeg", "exact"] for s in range(0, 40, 4)}
    write_tree(tmp_path / "src", {"a": range(0, 20), "b": range(20, 40)}, copies)
    split_folder(tmp_path / "src", tmp_path / "out", 0.3, seed=2)
    for s in copies:
        c = "a" if s < 20 else "b"
        sides = {split for split in ("train", "test") for p in (tmp_path / "out" / split / c).glob(f"s{s:03d}*")}
        assert len(sides) == 1, f"scene {s} was split across train and test"
