"""Bad inputs and environment faults, tried as a user would, across every command.

Each case runs the real CLI in a fresh process and asserts three things: the exit code, the one-line
message (never a Python traceback), and that no file outside the command's output changed (every file of
the case's world is hashed before and after). The data-loss cases of the reliability issue come first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import make_class_images, make_image_tree, pretrained_weights_or_none
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "fixtures" / "models"
BLOCK_HEAVY = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError("No module named " + repr(name), name=name)
sys.meta_path.insert(0, Block())
from edgetune.cli import main
sys.exit(main(sys.argv[1:]))
"""


@dataclass
class Result:
    rc: int
    out: str
    err: str


def snapshot(root: Path, skip: Path | None = None) -> dict[str, str]:
    """sha256 of every file under root (outside `skip`), and the set of folders: what a command may not touch."""
    out = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents or p.name.startswith(f".{skip.name}.")):
            continue
        if p.is_symlink() or p.is_fifo():
            out[str(p.relative_to(root))] = "special"
        elif p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[str(p.relative_to(root)) + "/"] = "dir"
    return out


def cli(*args: str, cwd: Path | None = None, blocked: tuple[str, ...] = (), timeout: int = 600) -> Result:
    """The CLI in a fresh process (optionally with some packages made unimportable, like a lean install)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if blocked:
        cmd = [sys.executable, "-c", BLOCK_HEAVY.format(blocked=set(blocked)), *args]
    else:
        cmd = [sys.executable, "-m", "edgetune.cli", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr)


def expect(r: Result, rc: int, message: str) -> None:
    assert r.rc == rc, f"exit {r.rc} != {rc}\nstdout: {r.out[-1500:]}\nstderr: {r.err[-3000:]}"
    assert "Traceback" not in r.err, r.err[-3000:]
    assert message.lower() in (r.err + r.out).lower(), f"{message!r} not in:\n{r.err[-3000:]}"


@dataclass
class World:
    """A folder holding a user's files; `check()` asserts that only `output` changed."""

    root: Path
    before: dict = field(default_factory=dict)

    def freeze(self, output: Path | None = None) -> World:
        self.output = output
        self.before = snapshot(self.root, output)
        return self

    def check(self) -> None:
        assert snapshot(self.root, self.output) == self.before, "a file outside the output changed"


@pytest.fixture
def world(tmp_path: Path) -> World:
    root = tmp_path / "world"
    make_image_tree(root / "photos", per_class=6, size=40)
    (root / "notes.txt").write_text("the user's own file")
    return World(root)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """Committed tiny models with their metadata, and images they classify."""
    d = tmp_path_factory.mktemp("models")
    for f in MODELS.glob("tiny3_*"):
        shutil.copy(f, d / f.name)
    make_image_tree(d / "images", classes=("red", "green", "blue"), per_class=2, size=40)
    return d


def _meta_variant(model_dir: Path, tmp: Path, change) -> Path:
    """A copy of tiny3_fp32.tflite with an edited metadata JSON beside it."""
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_dir / "tiny3_fp32.tflite", tmp / "m.tflite")
    meta = json.loads((model_dir / "tiny3_fp32.json").read_text())
    change(meta)
    (tmp / "m.json").write_text(json.dumps(meta))
    return tmp / "m.tflite"


# ------------------------------------------------------------------ data loss (output safety)
def test_train_into_its_own_data_folder_is_refused(world):
    w = world.freeze()
    expect(cli("train", "--data", str(w.root / "photos"), "--out", str(w.root / "photos"), "--epochs", "1"), 2, "input")
    w.check()


def test_train_into_a_folder_inside_the_data_is_refused(world):
    w = world.freeze()
    expect(cli("train", "--data", str(w.root / "photos"), "--out", str(w.root / "photos" / "run")), 2, "inside the input")
    w.check()


@pytest.mark.parametrize("force", [False, True])
def test_train_over_a_users_folder_is_refused(world, tmp_path, force):
    data = make_image_tree(tmp_path / "data", per_class=6, size=40)
    w = world.freeze()
    expect(cli("train", "--data", str(data), "--out", str(w.root), *(["--force"] if force else [])), 2, "did not create")
    w.check()


def test_split_into_the_parent_of_its_source_is_refused(world):
    w = world.freeze()
    expect(cli("data", "split", str(w.root / "photos"), "--out", str(w.root), "--force"), 2, "contains the input")
    w.check()


def test_split_into_the_current_folder_is_refused(world):
    w = world.freeze()
    expect(cli("data", "split", "photos", "--out", ".", "--force", cwd=w.root), 2, "current folder")
    w.check()


def test_split_into_its_own_source_is_refused(world):
    w = world.freeze()
    expect(cli("data", "split", str(w.root / "photos"), "--out", str(w.root / "photos" / "cats"), "--force"), 2, "input")
    w.check()


def test_split_over_an_existing_file_is_refused(world):
    w = world.freeze()
    expect(cli("data", "split", str(w.root / "photos"), "--out", str(w.root / "notes.txt"), "--force"), 2, "existing file")
    w.check()


@pytest.mark.parametrize("target", ["home", "root"])
def test_split_into_home_or_root_is_refused(world, target):
    w = world.freeze()
    out = str(Path.home()) if target == "home" else "/"
    expect(cli("data", "split", str(w.root / "photos"), "--out", out, "--force"), 2, "refusing to write")
    w.check()


def test_compare_over_an_existing_file_is_refused(world, tmp_path):
    res = _results_file(tmp_path)
    w = world.freeze()
    expect(cli("compare", str(res), "--out", str(w.root / "notes.txt")), 2, "existing file")
    w.check()


def test_bench_results_over_a_users_file_is_refused(world, model_dir):
    w = world.freeze()
    expect(cli("bench", str(model_dir / "tiny3_fp32.tflite"), "--threads", "1", "--out", str(w.root / "notes.txt")),
           2, "not an edgetune")
    w.check()


def test_pipeline_over_a_users_folder_is_refused_before_training(world):
    w = world.freeze()
    expect(cli("pipeline", "--data", str(w.root / "photos"), "--out", str(w.root / "photos"), "--quick"), 2, "input")
    w.check()


# ------------------------------------------------------------------ hangs
def test_predict_skips_a_fifo_instead_of_hanging(model_dir, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(next((model_dir / "images" / "red").iterdir()), folder / "a.jpg")
    os.mkfifo(folder / "b.jpg")
    r = cli("predict", str(model_dir / "tiny3_fp32.tflite"), str(folder), timeout=60)
    assert r.rc == 0 and "a.jpg" in r.out and "b.jpg" not in r.out, r.err
    assert "not a regular file" in r.err.lower() or "skipp" in r.err.lower()


# ------------------------------------------------------------------ contracts the runtime cannot honour
META_CASES = {
    "reversed input range": (lambda m: m["preprocessing"].update(input_range=[255.0, 0.0]), "reversed"),
    "antialias": (lambda m: m["preprocessing"].update(antialias=True), "antialias"),
    "normalization": (lambda m: m["preprocessing"].update(normalization="imagenet_mean_std"), "normalization"),
    "jpeg_dct": (lambda m: m["preprocessing"].update(jpeg_dct="INTEGER_FAST"), "jpeg_dct"),
    "missing size": (lambda m: m["preprocessing"].pop("size"), "size is missing"),
    "missing output_kind": (lambda m: m.pop("output_kind"), "output_kind is missing"),
    "preprocessing a string": (lambda m: m.update(preprocessing="bilinear"), "preprocessing must be a JSON object"),
    "input null": (lambda m: m.update(input=None), "input must be a JSON object"),
    "size a string": (lambda m: m["preprocessing"].update(size="32"), "size must be"),
    "labels too few": (lambda m: m.update(labels=["red"]), "labels"),
    "label count mismatch": (lambda m: m.update(labels=["a", "b", "c", "d"]), "do not match"),
}


@pytest.mark.parametrize("case", sorted(META_CASES))
def test_predict_refuses_bad_metadata(model_dir, tmp_path, case):
    change, message = META_CASES[case]
    model = _meta_variant(model_dir, tmp_path / "m", change)
    expect(cli("predict", str(model), str(model_dir / "images")), 2, message)


def test_predict_metadata_not_json(model_dir, tmp_path):
    model = _meta_variant(model_dir, tmp_path / "m", lambda m: None)
    model.with_suffix(".json").write_text("{not json")
    expect(cli("predict", str(model), str(model_dir / "images")), 2, "not readable json")


# ------------------------------------------------------------------ predict / bench / compare inputs
def test_predict_missing_model(tmp_path):
    expect(cli("predict", str(tmp_path / "none.tflite"), str(tmp_path)), 2, "does not exist")


def test_predict_garbage_model(model_dir, tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(os.urandom(2000))
    shutil.copy(model_dir / "tiny3_fp32.json", tmp_path / "bad.json")
    expect(cli("predict", str(bad), str(model_dir / "images")), 2, "not a loadable")


def test_predict_without_images(model_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    expect(cli("predict", str(model_dir / "tiny3_fp32.tflite"), str(tmp_path / "empty")), 2, "no images found")


def test_predict_corrupt_image_among_good_ones(model_dir, tmp_path):
    folder = tmp_path / "imgs"
    shutil.copytree(model_dir / "images" / "red", folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    r = cli("predict", str(model_dir / "tiny3_fp32.tflite"), str(folder))
    expect(r, 1, "broken.jpg")
    assert r.out.count(".jpg:") == 2  # the good images still ran


def test_bench_missing_target(tmp_path):
    expect(cli("bench", str(tmp_path / "none.tflite")), 2, "does not exist")


def test_bench_bad_threads(model_dir):
    expect(cli("bench", str(model_dir / "tiny3_fp32.tflite"), "--threads", "0"), 2, "threads")


def test_bench_unknown_baseline_lists_rows(model_dir, tmp_path):
    expect(cli("bench", str(model_dir / "tiny3_fp32.tflite"), "--threads", "1", "--baseline", "int8.tflite",
               "--out", str(tmp_path / "r.json")), 2, "rows: tiny3_fp32.tflite")


def _results_file(tmp_path: Path, edit=None) -> Path:
    from edgetune.benchmarks.results import make_results

    res = make_results({"name": "box"}, {}, [{"name": "a.tflite", "format": "tflite", "size_bytes": 10}], [],
                       [{"name": "a.tflite", "mode": "predictor", "threads": 1, "status": "ok", "p50_ms": 1.0, "p99_ms": 2.0}])
    if edit:
        edit(res)
    p = tmp_path / f"results-{len(list(tmp_path.glob('results-*')))}.json"
    p.write_text(json.dumps(res))
    return p


RESULT_CASES = {
    "latency rows are numbers": (lambda r: r.update(latency=[1, 2]), "not an object"),
    "model entry without name": (lambda r: r["models"][0].pop("name"), "lacks ['name']"),
    "p50 a string": (lambda r: r["latency"][0].update(p50_ms="fast"), "p50_ms must be a number"),
    "wrong schema": (lambda r: r.update(schema=99), "schema 99"),
    "not results": (lambda r: r.update(kind="something-else"), "not an edgetune bench results file"),
}


@pytest.mark.parametrize("case", sorted(RESULT_CASES))
def test_compare_refuses_bad_results(tmp_path, case):
    edit, message = RESULT_CASES[case]
    expect(cli("compare", str(_results_file(tmp_path, edit)), "--out", str(tmp_path / "cmp")), 2, message)
    assert not (tmp_path / "cmp").exists()


def test_compare_missing_and_non_json(tmp_path):
    expect(cli("compare", str(tmp_path / "none.json"), "--out", str(tmp_path / "c")), 2, "does not exist")
    (tmp_path / "x.json").write_text("not json")
    expect(cli("compare", str(tmp_path / "x.json"), "--out", str(tmp_path / "c")), 2, "not readable json")


def test_compare_without_matplotlib_writes_the_tables(tmp_path):
    r = cli("compare", str(_results_file(tmp_path)), "--out", str(tmp_path / "cmp"), blocked=("matplotlib",))
    expect(r, 0, "needs matplotlib")
    assert "Formats across devices" in (tmp_path / "cmp" / "compare.md").read_text()


# ------------------------------------------------------------------ lean install: heavy stages say which extra
@pytest.mark.parametrize("command", [["train", "--epochs", "1"], ["convert", "run"], ["pipeline", "--quick"]])
def test_heavy_stage_on_a_lean_install_names_the_extra(tmp_path, command):
    r = cli(*command, cwd=tmp_path, blocked=("tensorflow", "keras", "tf_keras"))
    expect(r, 2, "pip install 'edgetune[train]'")


# ------------------------------------------------------------------ train / data inputs
def test_train_flag_out_of_range(tmp_path):
    expect(cli("train", "--data", str(tmp_path), "--epochs", "0"), 2, "--epochs")


def test_train_missing_data(tmp_path):
    expect(cli("train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "run")), 2, "does not exist")


def test_train_missing_weights(tmp_path):
    data = make_image_tree(tmp_path / "data", per_class=6, size=40)
    expect(cli("train", "--data", str(data), "--out", str(tmp_path / "run"), "--weights", str(tmp_path / "w.h5")),
           2, "does not exist")


def test_data_check_missing_and_single_class(tmp_path):
    expect(cli("data", "check", str(tmp_path / "none")), 2, "does not exist")
    make_class_images(tmp_path / "one" / "cats", 0, 3)
    expect(cli("data", "check", str(tmp_path / "one")), 2, "two class folders")


def test_data_split_bad_fraction(world):
    w = world.freeze()
    expect(cli("data", "split", str(w.root / "photos"), "--out", str(w.root.parent / "out"), "--test-fraction", "1.5"),
           2, "fraction")
    w.check()


def test_data_fetch_missing_source(tmp_path):
    expect(cli("data", "fetch", "cats-vs-dogs", "--from", str(tmp_path / "none.zip"), "--force"), 2, "does not exist")


def test_decompression_bomb_is_reported_not_raised(tmp_path):
    data = make_image_tree(tmp_path / "data", per_class=4, size=40)
    Image.new("L", (14000, 14000)).save(data / "cats" / "bomb.png", optimize=True)  # ~196 MP: over Pillow's bomb limit
    r = cli("data", "check", str(data))
    assert "Traceback" not in r.err and "bomb.png" in r.out + r.err


def test_convert_missing_run_and_unknown_preset(tmp_path):
    expect(cli("convert", str(tmp_path / "none")), 2, "does not exist")
    expect(cli("convert", "--preset", "int4", str(tmp_path)), 2, "unknown preset")


# ------------------------------------------------------------------ cases that need a trained run
@pytest.fixture(scope="module")
def converted_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny trained run (1+1 epochs, 48 px) with its tflite_fp32 export, and its data folder."""
    root = tmp_path_factory.mktemp("badrun")
    data = root / "data"
    make_image_tree(data / "train", per_class=10, seed=1)
    make_image_tree(data / "validation", per_class=6, seed=2)
    run = root / "run"
    r = cli("train", "--data", str(data), "--out", str(run), "--image-size", "48", "--batch-size", "8", "--epochs", "1",
            "--fine-tune-epochs", "1", "--weights", pretrained_weights_or_none(), "--verbose", "0")
    assert r.rc == 0, r.err[-3000:]
    r = cli("convert", str(run), "--preset", "tflite_fp32", "--calibration-images", "8")
    assert r.rc == 0, r.err[-3000:]
    return run, data


def test_train_over_a_complete_run_needs_force(converted_run, tmp_path):
    run, data = converted_run
    before = snapshot(run.parent)
    expect(cli("train", "--data", str(data), "--out", str(run), "--epochs", "1"), 2, "--force")
    assert snapshot(run.parent) == before


def test_convert_after_a_held_out_image_was_deleted(converted_run, tmp_path):
    run, data = converted_run
    copy = tmp_path / "copy"
    shutil.copytree(data, copy / "data")
    shutil.copytree(run, copy / "run")
    meta = json.loads((copy / "run" / "metadata.json").read_text())
    meta["source"]["data_root"] = str(copy / "data")
    (copy / "run" / "metadata.json").write_text(json.dumps(meta))
    victim = (copy / "run" / "splits" / "test.txt").read_text().splitlines()[0].split("\t")[0]
    (copy / "data" / victim).unlink()
    expect(cli("convert", str(copy / "run"), "--preset", "tflite_fp32"), 2, Path(victim).name)


def test_train_with_non_finite_loss_stops_and_writes_no_complete_run(tmp_path):
    data = make_image_tree(tmp_path / "data", per_class=8, size=40)
    out = tmp_path / "run"
    expect(cli("train", "--data", str(data), "--out", str(out), "--learning-rate", "inf"), 2, "finite")  # refused at once
    # A finite rate so large that the loss overflows: training stops at the first non-finite loss.
    r = cli("train", "--data", str(data), "--out", str(out), "--image-size", "48", "--epochs", "3", "--fine-tune-epochs", "0",
            "--learning-rate", "3e38", "--weights", pretrained_weights_or_none(), "--verbose", "0")
    assert r.rc != 0 and "Traceback" not in r.err, r.err[-2000:]
    assert re.search(r"loss became (nan|inf)", r.err.lower()), r.err[-2000:]
    assert not (out / "metadata.json").exists()


def test_predict_with_reversed_range_never_reports_labels(model_dir, tmp_path):
    """The silent failure of the issue: inverted pixels and confident wrong labels. Now: refused, no output."""
    model = _meta_variant(model_dir, tmp_path / "m", lambda m: m["preprocessing"].update(input_range=[255.0, 0.0]))
    r = cli("predict", str(model), str(model_dir / "images"))
    assert r.rc == 2 and r.out == ""


def test_bad_images_never_escape_as_tracebacks(tmp_path, model_dir):
    """A folder of hostile files: empty, text named .png, a truncated PNG, a 1x1 image, a directory named x.jpg."""
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("hello")
    good = tmp_path / "g.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(good)
    (folder / "cut.png").write_bytes(good.read_bytes()[:40])
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(folder / "dot.png")
    (folder / "dir.jpg").mkdir()
    r = cli("predict", str(model_dir / "tiny3_fp32.tflite"), str(folder))
    expect(r, 1, "3 of 4 images failed")
    assert "dot.png" in r.out
