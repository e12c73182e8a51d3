"""tf.data input: image file -> float32 0..255 RGB at the model's size, exactly as the runtime does it.

The preprocessing here is the deployment contract (`edgetune.contract.Preprocessing`): JPEG decoded
with the accurate integer IDCT (what Pillow uses; TensorFlow's default INTEGER_FAST differs by a few
levels per pixel), EXIF orientation applied, bilinear resize with half-pixel centers and no
antialias, no rounding. Normalization to [-1, 1] happens inside the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from edgetune.train.splits import Sample

AUTOTUNE = tf.data.AUTOTUNE
# Keep decoded images in memory between epochs when they fit comfortably (bytes of float32 tensors).
MEMORY_CACHE_LIMIT = 3 << 30


def _orient(img: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Apply an EXIF orientation code (1..8) like PIL.ImageOps.exif_transpose."""
    branches = [
        lambda: img,  # 1: upright
        lambda: tf.image.flip_left_right(img),  # 2
        lambda: tf.image.rot90(img, 2),  # 3
        lambda: tf.image.flip_up_down(img),  # 4
        lambda: tf.image.transpose(img),  # 5
        lambda: tf.image.rot90(img, 3),  # 6: stored rotated; PIL ROTATE_270
        lambda: tf.image.rot90(tf.image.transpose(img), 2),  # 7: transverse
        lambda: tf.image.rot90(img, 1),  # 8: PIL ROTATE_90
    ]
    return tf.switch_case(tf.clip_by_value(orientation - 1, 0, 7), branches)


def decode_and_resize(path: tf.Tensor, orientation: tf.Tensor, size: Sequence[int]) -> tf.Tensor:
    """Read, decode (first frame of animations), orient and resize one image to float32 (H, W, 3)."""
    data = tf.io.read_file(path)
    img = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
    )
    img = _orient(img, orientation)
    img = tf.image.resize(img, size, method="bilinear", antialias=False)
    img.set_shape((size[0], size[1], 3))
    return img


def load_images(paths: Sequence[str], size: Sequence[int], orientations: Sequence[int] | None = None, batch_size: int = 64) -> np.ndarray:
    """Decode a list of files into one float32 array (N, H, W, 3), e.g. for calibration or parity."""
    orientations = list(orientations) if orientations is not None else [1] * len(paths)
    ds = tf.data.Dataset.from_tensor_slices(([str(p) for p in paths], tf.constant(orientations, tf.int32)))
    ds = ds.map(lambda p, o: decode_and_resize(p, o, size), num_parallel_calls=AUTOTUNE).batch(batch_size)
    batches = [b.numpy() for b in ds]
    return np.concatenate(batches) if batches else np.zeros((0, size[0], size[1], 3), np.float32)


def make_dataset(
    samples: Sequence[Sample],
    size: Sequence[int],
    batch_size: int,
    num_classes: int,
    shuffle: bool = False,
    seed: int = 0,
    cache: bool | None = None,
) -> tf.data.Dataset:
    """Batched (image, label) pairs; labels are float (N, 1) for two classes, int otherwise."""
    paths = [str(s.path) for s in samples]
    orient = tf.constant([s.orientation for s in samples], tf.int32)
    if num_classes == 2:
        labels = tf.constant([[float(s.label)] for s in samples], tf.float32)
    else:
        labels = tf.constant([s.label for s in samples], tf.int32)
    ds = tf.data.Dataset.from_tensor_slices((paths, orient, labels))
    ds = ds.map(lambda p, o, y: (decode_and_resize(p, o, size), y), num_parallel_calls=AUTOTUNE)
    if cache is None:
        cache = len(samples) * size[0] * size[1] * 3 * 4 < MEMORY_CACHE_LIMIT
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(len(samples), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(AUTOTUNE)
