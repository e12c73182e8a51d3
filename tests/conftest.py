"""Shared fixtures: tiny generated image folders and the optional real assets in ../shared/assets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED_ASSETS = Path(os.environ.get("EDGETUNE_SHARED_ASSETS", ROOT.parent / "shared" / "assets"))
CATS_DOGS = SHARED_ASSETS / "cats_and_dogs_filtered"
IMAGENET_NO_TOP = SHARED_ASSETS / "mobilenet_v2" / "mobilenet_v2_1.0_imagenet_no_top.weights.h5"
SOURCE_MODELS = SHARED_ASSETS / "mobilenet_v2" / "source"


def make_class_images(folder: Path, label_index: int, count: int, size: int = 48, seed: int = 0, fmt: str = "jpg") -> list[Path]:
    """Write `count` images whose class is visible: class k has a bright blob in quadrant k, plus noise.

    The blob's size and place and the background's gradient vary per image (a separate generator, so
    the noise is unchanged): with one fixed blob on flat noise, images of a class differ only by noise
    and duplicate search rightly calls them near duplicates of each other (`edgetune.train.duplicates`).
    """
    rng = np.random.default_rng(seed * 1000 + label_index)
    jitter = np.random.default_rng([seed, label_index, 7])
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        h = w = size + int(rng.integers(0, 16))  # varied sizes, so resizing is exercised
        img = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
        slope_y, slope_x = jitter.uniform(-50, 50, 2)  # a background gradient of random direction
        yy, xx = np.mgrid[0:h, 0:w]
        img = (img + 50 + slope_y * (yy / h - 0.5)[..., None] + slope_x * (xx / w - 0.5)[..., None]).astype(np.uint8)
        qy, qx = divmod(label_index % 4, 2)
        bh, bw = (int(v) for v in jitter.integers(h // 4, h // 2 + 1, 2))
        y0 = qy * h // 2 + int(jitter.integers(0, h // 2 - bh + 1))
        x0 = qx * w // 2 + int(jitter.integers(0, w // 2 - bw + 1))
        img[y0:y0 + bh, x0:x0 + bw, label_index % 3] = 230
        p = folder / f"img_{i:03d}.{fmt}"
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths


def synth_color_image(channel: int, seed: int, size: int = 40) -> np.ndarray:
    """An image the tiny fixture nets (tests/fixtures/models) classify by colour: a bright blob in `channel`
    on a gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.stack([xx * 160 // size, yy * 160 // size, (xx + yy) * 80 // (2 * size)], axis=-1).astype(np.int32)
    y0, x0 = rng.integers(0, size // 2, 2)
    img[y0:y0 + size // 2, x0:x0 + size // 2, channel] = 250
    return np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)


def make_image_tree(root: Path, classes=("cats", "dogs"), per_class: int = 12, size: int = 48, seed: int = 0) -> Path:
    """A single class-folder tree: root/<class>/img_NNN.jpg."""
    for k, name in enumerate(classes):
        make_class_images(root / name, k, per_class, size, seed)
    return root


@pytest.fixture
def tiny_tree(tmp_path: Path) -> Path:
    """Two classes x 12 generated JPEGs in one class-folder tree."""
    return make_image_tree(tmp_path / "tree")


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """train/ and validation/ class folders, like cats_and_dogs_filtered, at a tiny scale."""
    root = tmp_path / "data"
    make_image_tree(root / "train", per_class=16, seed=1)
    make_image_tree(root / "validation", per_class=10, seed=2)
    return root


@pytest.fixture(scope="session")
def shared_assets() -> Path:
    """../shared/assets, or skip when this machine does not have it (a fresh user machine)."""
    if not SHARED_ASSETS.is_dir():
        pytest.skip(f"shared assets not present at {SHARED_ASSETS}")
    return SHARED_ASSETS


def pretrained_weights_or_none() -> str:
    """The real ImageNet no-top weights when present; else 'none' (train recalibrates BatchNorm)."""
    return str(IMAGENET_NO_TOP) if IMAGENET_NO_TOP.is_file() else "none"


def tiny_train_config(data: Path, out: Path, **overrides):
    """A TrainConfig that trains in seconds on tiny generated data (1 + 1 epochs, 48 px)."""
    from edgetune.train import TrainConfig

    kw = dict(data=data, out=out, image_size=48, batch_size=8, epochs=1, fine_tune_epochs=1,
              weights=pretrained_weights_or_none(), seed=0, verbose=0)
    kw.update(overrides)
    return TrainConfig(**kw)


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory) -> Path:
    """A complete run dir trained once per test session on tiny generated cats/dogs folders."""
    from edgetune.train import train_run

    root = tmp_path_factory.mktemp("tinyrun")
    make_image_tree(root / "data" / "train", per_class=16, seed=1)
    make_image_tree(root / "data" / "validation", per_class=10, seed=2)
    return train_run(tiny_train_config(root / "data", root / "run"))


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """A tiny but confident model (so quantization has decisions to keep), converted through every preset:
    (run dir, rows by preset), once per session for test_convert.py and test_convert_int8.py."""
    from edgetune.convert import ConvertConfig, convert_run
    from edgetune.train import train_run

    root = tmp_path_factory.mktemp("convert")
    make_image_tree(root / "data" / "train", per_class=16, seed=1)
    make_image_tree(root / "data" / "validation", per_class=20, seed=2)
    run = train_run(tiny_train_config(root / "data", root / "run", epochs=20, learning_rate=1e-3, fine_tune_epochs=0))
    # 32 training images are one step per epoch: 10 steps for the fake-quant ranges to settle and the pruned net to recover.
    rows = convert_run(ConvertConfig(run=run, preset="all", calibration_images=16, qat_epochs=10, qat_learning_rate=1e-4, prune_epochs=10,
                                     qat_min_steps=0, prune_min_steps=0, int8_floor=0.75, pruned_floor=0.75))
    return run, {r.preset: r for r in rows}


def tiny_input(path):
    """One fixture image as the `converted` run's model input (48 px)."""
    from edgetune.runtime import load_and_preprocess

    return load_and_preprocess(path, (48, 48))
