"""One decoder: training feeds the model exactly the runtime's pixels, and those equal TensorFlow's own ops.

Training (`edgetune.train.data`) decodes through the runtime's `load_for_contract`, so equality with
the runtime holds by construction; these tests check the tf.data plumbing keeps it (value for value)
and that the runtime's numpy resize still computes TensorFlow's `tf.image.resize(bilinear)`, the
operation the tutorial's recipe and older edgetune runs used. Measured numbers are printed (-s).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetune.contract import Preprocessing
from edgetune.runtime import Predictor, load_and_preprocess, resize_bilinear
from edgetune.runtime.image import load_for_contract

tf = pytest.importorskip("tensorflow")
train_data = pytest.importorskip("edgetune.train.data")

from conftest import CATS_DOGS, SOURCE_MODELS  # noqa: E402

from edgetune.train.splits import Sample  # noqa: E402

FIXTURE_MODEL = Path(__file__).resolve().parent / "fixtures" / "models" / "tiny3_fp32.tflite"
EXIF_ORIENTATION = 0x0112


def training_tensors(paths: list[Path], size: tuple[int, int], batch_size: int = 8) -> np.ndarray:
    """What `edgetune train` feeds the model for these files (its tf.data pipeline, unshuffled)."""
    ds = train_data.make_dataset([Sample(p, 0) for p in paths], size, batch_size, 2)
    return np.concatenate([x.numpy() for x, _ in ds])


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
def test_resize_matches_tensorflow(shape, size):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    ours = resize_bilinear(img, size)
    theirs = tf.image.resize(img, size, method="bilinear", antialias=False).numpy()
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    # Same float32 operations in the same order as TF's kernel: bit for bit, as the README says.
    np.testing.assert_array_equal(ours, theirs)


def test_training_tensors_equal_the_runtime_on_generated_images(tmp_path):
    paths = generated_images(tmp_path / "imgs")
    for size in ((96, 96), (61, 130)):
        ours = np.stack([load_and_preprocess(p, size) for p in paths])
        trained = training_tensors(paths, size)
        assert np.abs(trained - ours).max() == 0.0
    p = Predictor.from_path(FIXTURE_MODEL)
    deployed = np.stack([p.load(f) for f in paths])
    assert np.abs(training_tensors(paths, p.size) - deployed).max() == 0.0


def test_exif_orientation_reaches_training(tmp_path):
    """Every EXIF orientation code: training sees the image as displayed (PIL.ImageOps.exif_transpose)."""
    from PIL import ImageOps

    paths, expected = [], []
    for orientation in range(1, 9):
        arr = np.random.default_rng(orientation).integers(0, 255, (24, 40, 3), dtype=np.uint8)
        arr[:8, :10] = 255  # asymmetric, so every orientation is distinguishable
        img = Image.fromarray(arr)
        exif = img.getexif()
        exif[EXIF_ORIENTATION] = orientation
        path = tmp_path / f"o{orientation}.png"  # lossless, so the pixels can be compared exactly
        img.save(path, exif=exif)
        paths.append(path)
        expected.append(np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"), np.float32))
    for path, want in zip(paths, expected):
        got = training_tensors([path], want.shape[:2])[0]
        assert np.abs(got - want).max() == 0.0, path.name  # identity resize: the decoded pixels themselves


def test_preprocessing_the_decoder_cannot_honour_is_refused(tmp_path):
    path = generated_images(tmp_path / "imgs")[6]
    for field, value in (("antialias", True), ("resize", "nearest"), ("channels", "BGR")):
        with pytest.raises(ValueError, match=field):
            load_for_contract(path, Preprocessing(size=(8, 8), **{field: value}))


@pytest.mark.slow
def test_training_tensors_on_real_jpegs_equal_the_runtime_and_tensorflows_decoder(shared_assets):
    files = sorted((CATS_DOGS / "validation" / "cats").glob("*.jpg"))[:50] + sorted((CATS_DOGS / "validation" / "dogs").glob("*.jpg"))[:50]
    if len(files) < 100:
        pytest.skip("cats_and_dogs_filtered not complete")
    ours = np.stack([load_and_preprocess(p, (224, 224)) for p in files])
    assert np.abs(training_tensors(files, (224, 224)) - ours).max() == 0.0
    # What earlier runs and the tutorial computed: TF's JPEG decoder (accurate IDCT) and tf.image.resize.
    theirs = np.stack([tf.image.resize(tf.io.decode_jpeg(tf.io.read_file(str(p)), channels=3, dct_method="INTEGER_ACCURATE"),
                                       (224, 224), method="bilinear", antialias=False).numpy() for p in files])
    diff = np.abs(ours - theirs)
    print(f"\nreal JPEGs ({len(files)}, 224 px) vs TensorFlow's decoder: max |dpixel| {diff.max():.6f}, "
          f"identical values {np.mean(diff == 0):.6f}")
    assert diff.max() <= 1e-3
    model = SOURCE_MODELS / "tf2_mobilenet_v2_1.0_224_ptq.tflite"
    labels = (SOURCE_MODELS / "imagenet_labels.txt").read_text().splitlines()
    p = Predictor.from_path(model, labels=labels)
    a, b = p.predict(ours), p.predict(theirs)
    agree = np.mean(a.argmax(1) == b.argmax(1))
    print(f"ImageNet int8 model on the runtime's vs TensorFlow's pixels: top-1 agreement {agree:.3f}")
    assert agree >= 0.98
