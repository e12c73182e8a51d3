"""The runtime's Pillow + numpy preprocessing equals training's TensorFlow pipeline (edgetune.train.data).

Measured numbers are printed (run with -s): max pixel difference after decode + resize, and the
effect of that difference on a model's probabilities. Real cats-vs-dogs JPEGs and the ImageNet
.tflite are used when ../shared/assets is present; generated images and the fixture model otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetune.runtime import Predictor, load_and_preprocess, resize_bilinear

tf = pytest.importorskip("tensorflow")
train_data = pytest.importorskip("edgetune.train.data")

from conftest import CATS_DOGS, SOURCE_MODELS  # noqa: E402

FIXTURE_MODEL = Path(__file__).resolve().parent / "fixtures" / "models" / "tiny3_fp32.tflite"
EXIF_ORIENTATION = 0x0112


def tf_preprocess(paths: list[Path], size: tuple[int, int]) -> np.ndarray:
    """Training's decode + orient + resize (the orientation code comes from EXIF, as the data scan reads it)."""
    orientations = []
    for p in paths:
        with Image.open(p) as im:
            orientations.append(int(im.getexif().get(EXIF_ORIENTATION, 1) or 1))
    return train_data.load_images([str(p) for p in paths], size, orientations)


def generated_images(folder: Path) -> list[Path]:
    """Every format and colour mode the contract names, odd sizes, EXIF rotation, chroma subsampling."""
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    specs = [("q95_444.jpg", {"quality": 95, "subsampling": 0}), ("q75_420.jpg", {"quality": 75, "subsampling": 2}),
             ("gray.jpg", {"quality": 90}), ("rot6.jpg", {"quality": 90}), ("rot3.jpg", {"quality": 90}),
             ("rgba.png", {}), ("plain.png", {}), ("plain.bmp", {}), ("palette.gif", {}), ("lossless.webp", {"lossless": True})]
    for i, (name, kw) in enumerate(specs):
        h, w = int(rng.integers(40, 300)), int(rng.integers(40, 300))
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 / w, yy * 255 / h, 128 + 100 * np.sin(xx / 7.0 + yy / 11.0)], -1)
        img = Image.fromarray(np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8))
        if name.startswith("gray"):
            img = img.convert("L")
        elif name.startswith("rgba"):
            img = img.convert("RGBA")
        elif name.startswith("palette"):
            img = img.convert("P", palette=Image.Palette.ADAPTIVE)
        if name.startswith("rot"):
            exif = Image.Exif()
            exif[EXIF_ORIENTATION] = int(name[3])
            kw = {**kw, "exif": exif}
        p = folder / f"{i:02d}_{name}"
        img.save(p, **kw)
        paths.append(p)
    return paths


@pytest.mark.parametrize("shape,size", [((41, 59, 3), (160, 160)), ((500, 375, 3), (224, 224)), ((32, 32, 3), (32, 32)),
                                        ((7, 300, 3), (13, 5)), ((100, 100, 1), (33, 250))])
def test_resize_matches_tensorflow_bit_for_bit(shape, size):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    ours = resize_bilinear(img, size)
    theirs = tf.image.resize(img, size, method="bilinear", antialias=False).numpy()
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    # Same float32 operations in the same order as TF's kernel: expected identical, allow float noise.
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)


def test_decode_and_resize_match_training_on_generated_images(tmp_path):
    paths = generated_images(tmp_path / "imgs")
    ours = np.stack([load_and_preprocess(p, (96, 96)) for p in paths])
    theirs = tf_preprocess(paths, (96, 96))
    per_file = np.abs(ours - theirs).reshape(len(paths), -1).max(axis=1)
    print("\nmax |runtime - training| per generated file:", {p.name: float(d) for p, d in zip(paths, per_file)})
    # Same decoders (libjpeg-turbo ISLOW, zlib, ...) and the same float32 resize: measured identical
    # here (0.0); a Pillow or TensorFlow upgrade that changes a decoder shows up in this bound.
    assert per_file.max() <= 1e-3, dict(zip([p.name for p in paths], per_file))
    p = Predictor.from_path(FIXTURE_MODEL)
    a = p.predict(np.stack([load_and_preprocess(f, p.size) for f in paths]))
    b = p.predict(tf_preprocess(paths, p.size))
    print(f"fixture model, runtime vs training preprocessing: max |dprob| {np.abs(a - b).max():.2e}")
    assert np.abs(a - b).max() <= 1e-4 and (a.argmax(1) == b.argmax(1)).all()


@pytest.mark.slow
def test_decode_and_resize_match_training_on_real_jpegs(shared_assets):
    files = sorted((CATS_DOGS / "validation" / "cats").glob("*.jpg"))[:50] + sorted((CATS_DOGS / "validation" / "dogs").glob("*.jpg"))[:50]
    if len(files) < 100:
        pytest.skip("cats_and_dogs_filtered not complete")
    ours = np.stack([load_and_preprocess(p, (224, 224)) for p in files])
    theirs = tf_preprocess(files, (224, 224))
    diff = np.abs(ours - theirs)
    print(f"\nreal JPEGs ({len(files)}, 224 px): max |dpixel| {diff.max():.6f}, mean {diff.mean():.2e}, "
          f"identical values {np.mean(diff == 0):.6f}")
    assert diff.max() <= 1e-3
    model = SOURCE_MODELS / "tf2_mobilenet_v2_1.0_224_ptq.tflite"
    labels = (SOURCE_MODELS / "imagenet_labels.txt").read_text().splitlines()
    p = Predictor.from_path(model, labels=labels)
    a, b = p.predict(ours), p.predict(theirs)
    dp = np.abs(a - b).max()
    agree = np.mean(a.argmax(1) == b.argmax(1))
    print(f"ImageNet int8 model on runtime vs training preprocessing: top-1 agreement {agree:.3f}, max |dprob| {dp:.4f}")
    assert agree >= 0.98
