"""tf.data input: image file -> float32 0..255 RGB at the model's size, decoded by the runtime's own code.

Training decodes every image through `edgetune.runtime.image.load_for_contract` (Pillow + numpy),
the function the runtime runs on a Raspberry Pi, with the same `edgetune.contract.Preprocessing`
the run writes into its metadata: training and deployment see identical pixels by construction, and
every format Pillow reads trains (PPM, TIFF, 16-bit PNG, palette and 1-bit BMP, animated WebP's first
frame, a TIFF named .jpg). No TensorFlow image decoder sits between the user's files and the model.

tf.data calls the decoder through `tf.numpy_function` in a parallel map: Pillow's decoders and
numpy's resize release the GIL, so the map's threads keep every core busy.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf

from edgetune.contract import Preprocessing
from edgetune.runtime.image import load_for_contract
from edgetune.train.splits import Sample

AUTOTUNE = tf.data.AUTOTUNE
# Keep decoded images in memory between epochs when they fit comfortably (bytes of float32 tensors).
MEMORY_CACHE_LIMIT = 3 << 30


def contract_for(size: Sequence[int], preprocessing: Preprocessing | None = None) -> Preprocessing:
    """The preprocessing contract at `size`: `preprocessing` (default: the contract's defaults) resized."""
    return dataclasses.replace(preprocessing or Preprocessing(), size=(int(size[0]), int(size[1])))


def decode_and_resize(path: tf.Tensor, preprocessing: Preprocessing) -> tf.Tensor:
    """A tf.data op: one file path (string tensor) -> float32 (H, W, 3), through `load_for_contract`."""
    height, width = preprocessing.size

    def decode(p: bytes) -> np.ndarray:
        return load_for_contract(os.fsdecode(p), preprocessing)

    img = tf.numpy_function(decode, [path], tf.float32, stateful=False)
    img.set_shape((height, width, 3))
    return img


def load_images(paths: Sequence[str | os.PathLike], size: Sequence[int], *, preprocessing: Preprocessing | None = None,
                workers: int | None = None) -> np.ndarray:
    """Decode a list of files into one float32 array (N, H, W, 3), e.g. for calibration or parity.

    Args:
        paths: Image files.
        size: Model input (height, width).
        preprocessing: The contract to apply (default: the contract's defaults at `size`).
        workers: Decoding threads (default: two per core, at most 8).

    Raises:
        ImageError: A file is missing or does not decode (a UserError: one line from the CLI).
    """
    pre = contract_for(size, preprocessing)
    out = np.empty((len(paths), *pre.size, 3), np.float32)
    with ThreadPoolExecutor(max_workers=workers or min(8, 2 * (os.cpu_count() or 1))) as pool:
        for i, x in enumerate(pool.map(lambda p: load_for_contract(p, pre), paths)):
            out[i] = x
    return out


def make_dataset(
    samples: Sequence[Sample],
    size: Sequence[int],
    batch_size: int,
    num_classes: int,
    shuffle: bool = False,
    seed: int = 0,
    cache: bool | None = None,
    preprocessing: Preprocessing | None = None,
) -> tf.data.Dataset:
    """Batched (image, label) pairs; labels are float (N, 1) for two classes, int otherwise.

    Images are decoded as `preprocessing` says (default: the contract's defaults at `size`, what
    the run writes into its metadata), in parallel, in the order of `samples` before shuffling.
    """
    pre = contract_for(size, preprocessing)
    paths = [str(s.path) for s in samples]
    if num_classes == 2:
        labels = tf.constant([[float(s.label)] for s in samples], tf.float32)
    else:
        labels = tf.constant([s.label for s in samples], tf.int32)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    ds = ds.map(lambda p, y: (decode_and_resize(p, pre), y), num_parallel_calls=AUTOTUNE)
    if cache is None:
        cache = len(samples) * pre.size[0] * pre.size[1] * 3 * 4 < MEMORY_CACHE_LIMIT
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(len(samples), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(AUTOTUNE)
