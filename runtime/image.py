"""Image file -> float32 model input, with Pillow and numpy only: the one decoder of edgetune.

Training (`edgetune.train.data`), `edgetune data check`, convert's calibration and the runtime on a
Raspberry Pi all decode through `load_for_contract`, so training and deployment see identical pixels
by construction. It applies the contract (`edgetune.contract.Preprocessing`):

* decode with Pillow (libjpeg-turbo's default ISLOW IDCT = TF's `dct_method="INTEGER_ACCURATE"`);
  every format in IMAGE_SUFFIXES, whatever the file is named (Pillow reads the content), animated
  GIF, WebP and PNG take their first frame. Colour JPEGs go straight from libjpeg-turbo into numpy
  through `simplejpeg` where it is installed (a base dependency where it has wheels): the same
  library with the same settings, so the same pixels, in about half the time (`_decode_jpeg_turbo`);
* apply the EXIF orientation tag (`ImageOps.exif_transpose`);
* convert grayscale, 1-bit, RGBA, CMYK and palette images to RGB (palette indices become their
  colours; alpha is dropped, as TF's `channels=3`); 16-bit images keep their high byte;
* resize with `resize_bilinear`: TensorFlow's `tf.image.resize(method="bilinear", antialias=False)`
  re-implemented in numpy (half-pixel centers, float32 arithmetic in TF's order, no rounding);
* keep values in 0..255: normalization lives inside the model.
"""

from __future__ import annotations

import functools
import os
import stat
import sys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

try:  # libjpeg-turbo straight into numpy; absent where it has no wheel (32-bit Pi OS)
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - depends on the platform
    _simplejpeg = None

from edgetune import UserError
from edgetune.contract import Preprocessing

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".gif", ".webp", ".tif", ".tiff",
                  ".ppm", ".pgm", ".pbm", ".pnm", ".avif")
"""Suffixes a folder walk picks up. Decoding goes by content: a TIFF named .jpg decodes as a TIFF."""


class ImageError(UserError):
    """An image file that cannot be read or decoded (missing, truncated, not an image)."""


def load_image(path: str | os.PathLike, exif_orientation: bool = True, *, draft: Sequence[int] | None = None) -> np.ndarray:
    """Decode an image file to a uint8 RGB array (H, W, 3), first frame only, EXIF orientation applied.

    Args:
        path: Image file (JPEG, PNG, BMP, GIF, WebP or anything else Pillow reads).
        exif_orientation: Apply the EXIF orientation tag (the training contract does).
        draft: A model input (height, width): JPEGs are decoded at reduced scale when that still covers
            it (`jpeg_draft`); only for models trained that way (the contract's `jpeg_draft`).

    Returns:
        The decoded image, uint8, shape (height, width, 3).

    Raises:
        ImageError: The file is missing, truncated or not a readable image.
    """
    _require_regular_file(path)
    try:
        with Image.open(path) as img:
            if draft is None:
                fast = _decode_jpeg_turbo(img, exif_orientation)
                if fast is not None:
                    return fast
            else:
                jpeg_draft(img, draft, exif_orientation)
            # load() decodes the whole first frame now, so a truncated file fails here, not later.
            img.load()
            if exif_orientation:
                img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit PNG/PGM/TIFF: keep the high byte (TF's decode_png(dtype=uint8) does the same);
                # Pillow's convert would clip everything above 255 to white.
                arr = np.minimum(np.asarray(img, dtype=np.int64) >> 8, 255).clip(0)
                return np.repeat(arr.astype(np.uint8)[..., None], 3, axis=2)
            if img.mode != "RGB":
                img = img.convert("RGB")
            return np.asarray(img, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # Pillow reports truncated and foreign files as OSError/UnidentifiedImageError (an OSError).
        raise ImageError(f"{path}: not a readable image ({exc})") from exc


def _decode_jpeg_turbo(img: Image.Image, exif_orientation: bool) -> np.ndarray | None:
    """A colour JPEG decoded by libjpeg-turbo straight into numpy (`simplejpeg`), or None to use Pillow.

    Why: for a 500x375 photo Pillow spends about as long on its own buffers (RGBX rows, then the copy to
    numpy) as libjpeg-turbo spends decoding; this path measures about 2x faster. Same pixels, by construction
    and by test: both call libjpeg-turbo with its defaults (ISLOW IDCT, fancy upsampling, YCbCr -> RGB).
    Only plain colour JPEGs take it (Pillow mode RGB); grayscale, CMYK, MPO and draft decoding stay with
    Pillow. `strict=True` raises on any libjpeg warning (truncated or corrupt data); such a file goes to
    Pillow, which decides as it always did (error or pixels), so the result never depends on which path ran.
    """
    if _simplejpeg is None or img.format != "JPEG" or img.mode != "RGB":
        return None
    orientation = img.getexif().get(EXIF_ORIENTATION_TAG, 1) if exif_orientation else 1
    img.fp.seek(0)
    try:
        pixels = _simplejpeg.decode_jpeg(img.fp.read(), "RGB", strict=True)
    except ValueError:
        return None
    turn = _ORIENT.get(orientation)
    return np.ascontiguousarray(turn(pixels)) if turn else pixels


def _require_regular_file(path: str | os.PathLike) -> None:
    """Refuse FIFOs, sockets and devices before opening them: reading a FIFO blocks forever."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file") from exc
    except OSError as exc:
        raise ImageError(f"{path}: not readable ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(mode):
        raise ImageError(f"{path}: not a regular file ({_file_kind(mode)}), skipped")


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a plain file"


EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSING = (5, 6, 7, 8)  # EXIF orientations that swap width and height
# EXIF orientation -> the numpy view that `ImageOps.exif_transpose` produces (1 = as stored).
_ORIENT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
           7: lambda a: a[::-1, ::-1].transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1)}


def jpeg_draft(img: Image.Image, size: Sequence[int], exif_orientation: bool = True) -> None:
    """Ask libjpeg to decode a JPEG at 1/2, 1/4 or 1/8 scale when the result still covers `size`.

    libjpeg scales inside its inverse DCT (Pillow `Image.draft`), which skips most of the decoding
    work: a 500x375 photo for a 160x160 model is decoded at 250x188. The pixels differ from a full
    decode followed by the resize, so a model sees them only when it was trained on them too
    (`Preprocessing.jpeg_draft`). Other formats are left alone. Call before `img.load()`.

    Args:
        img: A freshly opened, not yet loaded image.
        size: The model input (height, width); the decoded image is never smaller in either direction.
        exif_orientation: Whether the caller applies the EXIF orientation afterwards (a 90-degree
            turn swaps which stored side becomes the height).
    """
    if img.format not in ("JPEG", "MPO"):
        return
    height, width = int(size[0]), int(size[1])
    if exif_orientation and height != width and img.getexif().get(EXIF_ORIENTATION_TAG) in _TRANSPOSING:
        height, width = width, height
    img.draft(img.mode, (width, height))


@functools.lru_cache(maxsize=64)
def _axis_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (lower, upper) and float32 weights of one axis, as TF's ResizeBilinear computes them.

    TF (half_pixel_centers=True): scale = float(in) / out; x = (i + 0.5) * scale - 0.5;
    lower = max(floor(x), 0); upper = min(ceil(x), in - 1); lerp = x - floor(x), all in float32.
    Cached (read-only arrays): a camera or a folder of same-size photos asks for the same axes every frame.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    x = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    x_floor = np.floor(x)
    lower = np.maximum(x_floor, 0).astype(np.intp)
    upper = np.minimum(np.ceil(x), in_size - 1).astype(np.intp)
    lerp = (x - x_floor).astype(np.float32)
    for a in (lower, upper, lerp):
        a.setflags(write=False)
    return lower, upper, lerp


def _rows_as_pixels(image: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The selected rows of a uint8 (H, W, 3|4) image as one uint32 per pixel (R, W), bytes in memory order.

    numpy's gathers are fast for 4-byte items and slow for 3-byte ones. For RGB, each uint32 reads the
    pixel's 3 bytes plus the first byte of the next pixel (ignored later): an overlapping, unaligned
    view of a copy of the rows with one spare byte at the end, so the last read stays inside it.
    """
    h, w, c = image.shape
    if c == 4:
        return np.ascontiguousarray(image[rows]).view(np.uint32).reshape(len(rows), w)
    if not image.flags.c_contiguous:  # e.g. a channel slice of a 4-channel camera frame: copy only these rows
        image, rows, h = np.ascontiguousarray(image[rows]), np.arange(len(rows)), len(rows)
    n = len(rows) * w * 3
    buf = np.empty(n + 1, np.uint8)
    np.take(image.reshape(h, w * 3), rows, axis=0, out=buf[:n].reshape(len(rows), w * 3))
    return np.ndarray((len(rows), w), dtype=np.uint32, buffer=buf, strides=(w * 3, 3))


def _corners(image: np.ndarray, rows: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left and right source pixels of every output column in the given `rows`, float32 (R, out_w, C).

    Converting after the gather is exact (uint8 -> float32), so the result equals converting first.
    Channels are unpacked one at a time (long strided loops; a (..., 3) copy loops 3 items at a time).
    """
    c = image.shape[2]
    if image.dtype != np.uint8 or c not in (3, 4):
        sel = image[rows].astype(np.float32)
        # np.take keeps C order (fancy indexing on axis 1 would not, and every later pass would be slow).
        return np.take(sel, x0, axis=1), np.take(sel, x1, axis=1)
    pixels = _rows_as_pixels(image, rows)
    out = []
    for x in (x0, x1):
        # Fancy indexing on axis 1 returns Fortran order; one small copy makes it C order for the views below.
        gathered = np.ascontiguousarray(pixels[:, x]).view(np.uint8).reshape(-1, 4)
        f = np.empty((len(rows), len(x), c), np.float32)
        flat = f.reshape(-1, c)
        for k in range(c):
            flat[:, k] = gathered[:, k]
        out.append(f)
    return out[0], out[1]


def resize_bilinear(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize (H, W, C) to `size` = (height, width) like `tf.image.resize(..., "bilinear", antialias=False)`.

    Method: separable bilinear interpolation with half-pixel centers and no antialias filter,
    computed in float32 in the order of TensorFlow's kernel (interpolate along x on the two source
    rows, then along y: top = tl + (tr - tl) * wx, ..., out = top + (bottom - top) * wy), so results
    equal TensorFlow's to float32 precision. The output is float32 and is not rounded. Only the
    source pixels that contribute are read (gathered before any conversion), so downscaling a
    large photo costs O(out_h * in_w + out_h * out_w).

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
    top, top_r = _corners(image, y0, x0, x1)
    bottom, bot_r = _corners(image, y1, x0, x1)
    c = top.shape[2]
    # In place on (out_h, out_w * C) views, so weights broadcast along long rows (not 3-item loops); the
    # operations and their order are TF's (float addition is commutative: tl + d == d + tl).
    t, tr, b, br = (a.reshape(out_h, out_w * c) for a in (top, top_r, bottom, bot_r))
    wx = np.repeat(wx, c)
    tr -= t
    tr *= wx
    t += tr
    br -= b
    br *= wx
    b += br
    b -= t
    b *= wy[:, None]
    t += b
    return top


def preprocess(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """A decoded uint8 RGB image -> float32 (height, width, 3) in 0..255, the model's raw input."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    return resize_bilinear(image, size)


def load_and_preprocess(path: str | os.PathLike, size: Sequence[int], exif_orientation: bool = True,
                        draft: bool = False) -> np.ndarray:
    """`load_image` then `preprocess`: one file -> float32 (height, width, 3) in 0..255.

    `draft` decodes JPEGs at reduced scale first (`jpeg_draft`): the contract's `jpeg_draft`.
    """
    return preprocess(load_image(path, exif_orientation, draft=size if draft else None), size)


def load_for_contract(path: str | os.PathLike, preprocessing: Preprocessing) -> np.ndarray:
    """One image file -> the model's float32 (height, width, 3) input in 0..255, as `preprocessing` says.

    The one entry point training, data checks, convert and the runtime share: every contract field
    that changes pixels is applied here (size, EXIF orientation, JPEG draft decoding), so a new field
    reaches training and deployment together.

    Raises:
        ImageError: The file is missing, not a regular file, truncated or not a readable image.
        ValueError: The contract asks for preprocessing this decoder does not implement.
    """
    return preprocess(decode_for_contract(path, preprocessing), preprocessing.size)


def decode_for_contract(path: str | os.PathLike, preprocessing: Preprocessing) -> np.ndarray:
    """The decoding half of `load_for_contract`: uint8 RGB (H, W, 3) before the resize (a stream's frames
    from image files, the file -> label timing's "decode" part). Same errors as `load_for_contract`."""
    if preprocessing.resize != "bilinear" or preprocessing.antialias or preprocessing.channels != "RGB":
        raise ValueError(f"unsupported preprocessing: resize={preprocessing.resize!r}, antialias={preprocessing.antialias}, "
                         f"channels={preprocessing.channels!r} (this decoder implements bilinear, no antialias, RGB)")
    return load_image(path, preprocessing.exif_orientation,
                      draft=preprocessing.size if preprocessing.jpeg_draft else None)


def walk_files(folder: str | os.PathLike, suffixes: Sequence[str] | None = IMAGE_SUFFIXES) -> tuple[list[str], list[str]]:
    """Files under `folder` (recursively, sorted; hidden files and folders skipped) with one of `suffixes`.

    Only regular files are returned: FIFOs, sockets, devices and broken links come back separately
    (opening a FIFO blocks forever), so callers can warn about them (`warn_not_regular`).

    Args:
        folder: The folder to walk.
        suffixes: Lower-case suffixes to keep; None keeps every file.

    Returns:
        (regular files, other entries that are not regular files), both sorted.
    """
    found, odd = [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for f in files:
            if f.startswith(".") or (suffixes is not None and not f.lower().endswith(tuple(suffixes))):
                continue
            path = os.path.join(root, f)
            try:
                regular = stat.S_ISREG(os.stat(path).st_mode)
            except OSError:  # a broken symbolic link, or a file that vanished
                regular = False
            (found if regular else odd).append(path)
    return sorted(found), sorted(odd)


def warn_not_regular(paths: Sequence[str | os.PathLike], where: str = "") -> None:
    """One line on stderr listing entries skipped because they are not regular files (FIFOs, sockets, devices).

    Printed, not a Python warning: it is meant for the person at the terminal, and must show even
    where warnings are filtered.
    """
    if paths:
        listing = ", ".join(os.fspath(p) for p in paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        one = len(paths) == 1
        print(f"edgetune: warning: {where + ': ' if where else ''}skipping {len(paths)} entr{'y' if one else 'ies'} that "
              f"{'is' if one else 'are'} not a regular file (FIFO, socket, device or broken link): {listing}",
              file=sys.stderr, flush=True)


def suffix_summary(folder: str | os.PathLike) -> str:
    """Which suffixes a folder holds and which edgetune reads: the message for a folder with no usable image."""
    counts: dict[str, int] = {}
    for path in walk_files(folder, None)[0]:
        suffix = os.path.splitext(path)[1].lower() or "(none)"
        counts[suffix] = counts.get(suffix, 0) + 1
    found = ", ".join(f"{s} ({n})" for s, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "no files"
    return f"found {found}; edgetune reads {' '.join(IMAGE_SUFFIXES)}"


def find_images(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Expand files and folders (recursively, sorted) into a list of image paths.

    Files named explicitly are kept whatever their suffix (a bad one gets its own error later);
    folders contribute regular files with an image suffix only (others are skipped with a warning).
    """
    out: list[str] = []
    for item in inputs:
        p = os.fspath(item)
        if os.path.isdir(p):
            found, odd = walk_files(p)
            warn_not_regular(odd, p)
            out += found
        else:
            out.append(p)
    return out
