"""Every image format Pillow reads works everywhere, with identical pixels in training and deployment.

Fixtures: tests/fixtures/formats/ (regenerate with tests/fixtures/make_formats.py): PPM/PGM/PBM,
TIFF (8- and 16-bit, and one named .jpg), 16-bit PNG, 1-bit and palette BMP, animated GIF and WebP
(first frame), lossy WebP, CMYK and EXIF-rotated JPEG. TensorFlow's decoders, which training used
before, crashed on 9 of these 21 files and read the palette BMP as palette indices.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_class_images, tiny_train_config

from edgetune.cli import main
from edgetune.contract import Preprocessing
from edgetune.runtime import Predictor, load_image
from edgetune.runtime.image import IMAGE_SUFFIXES, load_for_contract

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from make_formats import FOLDER, NAMES, expected_pixels  # noqa: E402

MODEL = FIXTURES / "models" / "tiny3_fp32.tflite"


@pytest.mark.parametrize("name", NAMES)
def test_every_format_decodes_to_its_true_pixels(name):
    img = load_image(FOLDER / name)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    expected = expected_pixels(name)
    if expected is not None:  # lossless: exactly the pixels written (palette colours, not indices)
        np.testing.assert_array_equal(img, expected)
    elif name.startswith("rot6"):  # EXIF orientation 6: the stored 20x27 image is shown 27 high
        assert img.shape[:2] == (27, 20)
    assert Path(name).suffix in IMAGE_SUFFIXES


def test_training_input_equals_the_runtime_input_for_every_format():
    pytest.importorskip("tensorflow")
    from edgetune.train.data import load_images, make_dataset
    from edgetune.train.splits import Sample

    paths = [FOLDER / n for n in NAMES]
    samples = [Sample(p, i % 2) for i, p in enumerate(paths)]
    for size in ((48, 48), (37, 53)):
        train_x = np.concatenate([x.numpy() for x, _ in make_dataset(samples, size, 5, 2)])
        runtime_x = np.stack([load_for_contract(p, Preprocessing(size=size)) for p in paths])
        # One decoder: the tensors training feeds the model are the runtime's, value for value.
        assert train_x.dtype == np.float32 and train_x.shape == (len(paths), *size, 3)
        assert np.abs(train_x - runtime_x).max() == 0.0
        assert np.abs(load_images(paths, size) - runtime_x).max() == 0.0
    predictor = Predictor.from_path(MODEL)  # the deployed runtime, at the fixture model's own size
    deployed = np.stack([predictor.load(p) for p in paths])
    trained = np.concatenate([x.numpy() for x, _ in make_dataset(samples, predictor.size, 8, 2)])
    assert np.abs(trained - deployed).max() == 0.0


def test_jpeg_draft_runs_train_with_the_runtimes_drafted_pixels(tmp_path):
    """--jpeg-draft: training decodes large JPEGs at reduced scale exactly as the runtime does with that contract."""
    pytest.importorskip("tensorflow")
    from edgetune.train.config import TrainConfig
    from edgetune.train.data import make_dataset
    from edgetune.train.splits import Sample

    from PIL import Image

    paths, rng = [], np.random.default_rng(0)
    for i in range(3):  # 400x320 textured JPEGs: at 48 px libjpeg can decode them at 1/4 scale
        paths.append(tmp_path / f"{i}.jpg")
        Image.fromarray(rng.integers(0, 256, (320, 400, 3), dtype=np.uint8)).save(paths[-1], quality=90)
    cfg = TrainConfig(data=str(tmp_path), out=str(tmp_path / "run"), image_size=48, jpeg_draft=True)
    pre = cfg.preprocessing()
    assert pre.jpeg_draft and pre.size == (48, 48)
    samples = [Sample(p, i % 2) for i, p in enumerate(paths)]
    trained = np.concatenate([x.numpy() for x, _ in make_dataset(samples, pre.size, 3, 2, preprocessing=pre)])
    drafted = np.stack([load_for_contract(p, pre) for p in paths])
    exact = np.stack([load_for_contract(p, Preprocessing(size=(48, 48))) for p in paths])
    assert np.abs(trained - drafted).max() == 0.0
    assert np.abs(trained - exact).max() > 1.0  # the draft really changes the pixels, so the contract must say so


def test_data_check_accepts_every_format(tmp_path, capsys):
    for i, name in enumerate(NAMES):
        (tmp_path / "t" / ("a", "b")[i % 2]).mkdir(parents=True, exist_ok=True)
        shutil.copy(FOLDER / name, tmp_path / "t" / ("a", "b")[i % 2] / name)
    assert main(["data", "check", str(tmp_path / "t")]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert f"{'total':<24} {len(NAMES):>7}     0" in out


@pytest.mark.slow  # ~1 min of CPU: a real (tiny) training run and a verified conversion
def test_a_class_folder_of_ppm_images_trains_converts_and_predicts(tmp_path, capsys):
    pytest.importorskip("tensorflow")
    from edgetune.train import train_run

    data = tmp_path / "data"
    for k, name in enumerate(("circle", "square")):
        make_class_images(data / name, k, 14, fmt="ppm")
    run = train_run(tiny_train_config(data, tmp_path / "run"))
    assert all(line.split("\t")[0].endswith(".ppm") for line in (run / "splits" / "test.txt").read_text().splitlines())
    assert main(["convert", str(run), "--preset", "tflite_fp32"]) == 0, capsys.readouterr().out
    model = run / "export" / "tflite_fp32.tflite"
    capsys.readouterr()
    assert main(["predict", str(model), str(data / "square"), "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 14 and all(".ppm: " in line for line in lines)
