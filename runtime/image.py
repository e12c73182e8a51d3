"""Image file -> float32 model input, exactly as training does it, with Pillow and numpy only.

The training side (`edgetune.train.data`) decodes with TensorFlow; this module reproduces that
contract (`edgetune.contract.Preprocessing`) without it:

* decode with Pillow (libjpeg-turbo's default ISLOW IDCT = TF's `dct_method="INTEGER_ACCURATE"`;
  PNG, BMP, GIF and WebP take their first frame, like `tf.io.decode_image(expand_animations=False)`);
* apply the EXIF orientation tag (`ImageOps.exif_transpose`);
* convert grayscale, RGBA, CMYK and palette images to RGB (alpha is dropped, as TF's `channels=3`);
* resize with `resize_bilinear`: TensorFlow's `tf.image.resize(method="bilinear", antialias=False)`
  re-implemented in numpy (half-pixel centers, float32 arithmetic in TF's order, no rounding);
* keep values in 0..255: normalization lives inside the model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

from edgetune import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


class ImageError(UserError):
    """An image file that cannot be read or decoded (missing, truncated, not an image)."""


def load_image(path: str | os.PathLike, exif_orientation: bool = True) -> np.ndarray:
    """Decode an image file to a uint8 RGB array (H, W, 3), first frame only, EXIF orientation applied.

    Args:
        path: Image file (JPEG, PNG, BMP, GIF, WebP or anything else Pillow reads).
        exif_orientation: Apply the EXIF orientation tag (the training contract does).

    Returns:
        The decoded image, uint8, shape (height, width, 3).

    Raises:
        ImageError: The file is missing, truncated or not a readable image.
    """
    try:
        with Image.open(path) as img:
            # load() decodes the whole first frame now, so a truncated file fails here, not later.
            img.load()
            if exif_orientation:
                img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit PNG: TF's decode_png(dtype=uint8) keeps the high byte; Pillow's convert clips.
                arr = np.asarray(img, dtype=np.uint32) >> 8
                return np.repeat(arr.astype(np.uint8)[..., None], 3, axis=2)
            if img.mode != "RGB":
                img = img.convert("RGB")
            return np.asarray(img, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # Pillow reports truncated and foreign files as OSError/UnidentifiedImageError (an OSError).
        raise ImageError(f"{path}: not a readable image ({exc})") from exc


def _axis_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (lower, upper) and float32 weights of one axis, as TF's ResizeBilinear computes them.

    TF (half_pixel_centers=True): scale = float(in) / out; x = (i + 0.5) * scale - 0.5;
    lower = max(floor(x), 0); upper = min(ceil(x), in - 1); lerp = x - floor(x), all in float32.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    x = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    x_floor = np.floor(x)
    lower = np.maximum(x_floor, 0).astype(np.intp)
    upper = np.minimum(np.ceil(x), in_size - 1).astype(np.intp)
    lerp = (x - x_floor).astype(np.float32)
    return lower, upper, lerp


def resize_bilinear(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize (H, W, C) to `size` = (height, width) like `tf.image.resize(..., "bilinear", antialias=False)`.

    Method: separable bilinear interpolation with half-pixel centers and no antialias filter,
    computed in float32 in the order of TensorFlow's kernel (interpolate along x on the two source
    rows, then along y), so results equal TensorFlow's to float32 precision. The output is float32
    and is not rounded. Only the source rows that contribute are touched, so downscaling a large
    photo costs O(out_h * in_w + out_h * out_w).

    Args:
        image: uint8 or float array (H, W, C).
        size: Target (height, width).

    Returns:
        float32 array (height, width, C).
    """
    out_h, out_w = int(size[0]), int(size[1])
    in_h, in_w = image.shape[:2]
    y0, y1, wy = _axis_weights(in_h, out_h)
    x0, x1, wx = _axis_weights(in_w, out_w)
    wx = wx[None, :, None]
    top = image[y0].astype(np.float32)
    bottom = image[y1].astype(np.float32)
    # np.take keeps C order (fancy indexing on axis 1 would not, and every later pass would be slow).
    top_l, top_r = np.take(top, x0, axis=1), np.take(top, x1, axis=1)
    bot_l, bot_r = np.take(bottom, x0, axis=1), np.take(bottom, x1, axis=1)
    top = top_l + (top_r - top_l) * wx
    bottom = bot_l + (bot_r - bot_l) * wx
    return top + (bottom - top) * wy[:, None, None]


def preprocess(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """A decoded uint8 RGB image -> float32 (height, width, 3) in 0..255, the model's raw input."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    return resize_bilinear(image, size)


def load_and_preprocess(path: str | os.PathLike, size: Sequence[int], exif_orientation: bool = True) -> np.ndarray:
    """`load_image` then `preprocess`: one file -> float32 (height, width, 3) in 0..255."""
    return preprocess(load_image(path, exif_orientation), size)


def find_images(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Expand files and folders (recursively, sorted) into a list of image paths.

    Files named explicitly are kept whatever their suffix (a bad one gets its own error later);
    folders contribute files with an image suffix only.
    """
    out: list[str] = []
    for item in inputs:
        p = os.fspath(item)
        if os.path.isdir(p):
            found = []
            for root, dirs, files in os.walk(p):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith(".")]
            out += sorted(found)
        else:
            out.append(p)
    return out
