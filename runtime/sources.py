"""Where `edgetune stream` gets its frames: cameras, video files and stream URLs through OpenCV, the Raspberry
Pi camera through picamera2, and folders (or globs) of image files replayed at a fixed rate.

Every source hands out `Frame`s: a uint8 (H, W, 3) array, its channel order (OpenCV and picamera2's
"RGB888" deliver B, G, R; image files are decoded to R, G, B), its index in the source and the moment
it was in memory. OpenCV and picamera2 are imported only when a source needs them, so the lean
runtime never loads them.
"""

from __future__ import annotations

import glob
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune import UserError
from edgetune.runtime._backends import _first_line
from edgetune.runtime.image import IMAGE_SUFFIXES, ImageError, find_images

LOST_AFTER_S = 2.0
"""A live source that delivers no frame for this long is reported as lost (cameras hiccup for a frame or two)."""
DEFAULT_IMAGE_FPS = 10.0
PICAMERA_NAMES = ("picamera", "picamera2")
CAMERA_INSTALL = "pip install 'edgetune[camera]'"


class SourceLost(Exception):
    """A source stopped delivering frames part-way (camera unplugged, stream dropped, video truncated)."""


@dataclass
class Frame:
    """One captured frame."""

    image: np.ndarray
    """uint8 (H, W, 3)."""
    order: str
    """Channel order of `image`: "RGB" or "BGR"."""
    index: int
    """Position in the source, counting every frame read (0-based)."""
    t_capture: float
    """time.perf_counter() when the frame was in memory (the start of capture -> decision latency)."""


class FrameSource:
    """What the stream pipeline reads from. `read()` returns None at the end of a finite source."""

    name: str = "source"
    live: bool = False
    """Cameras and network streams: frames come at their own pace and a failed read means trouble."""
    fps: float | None = None
    """Replay rate for files (the pipeline paces reads); None = read as they come."""

    def read(self) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file (called once, from the thread that reads)."""

    def end_note(self, frames_read: int) -> tuple[str, bool]:
        """(message, failed) for a source that returned None after `frames_read` frames."""
        return f"{self.name}: end after {frames_read} frames", False


def import_cv2():
    """OpenCV, or one line saying how to install it."""
    # OpenCV logs every backend it tried on a failed open; our one-line message says what matters.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own decoder chatter (AV_LOG_QUIET)
    try:
        import cv2
    except ImportError as exc:
        raise UserError(f"cameras, video files and stream URLs need OpenCV: {CAMERA_INSTALL} "
                        "(a folder of images streams without it)") from exc
    return cv2


def parse_resolution(spec: str | None) -> tuple[int, int] | None:
    """'640x480' -> (640, 480) (width, height)."""
    if spec is None:
        return None
    try:
        w, h = (int(v) for v in spec.lower().split("x"))
    except ValueError:
        raise UserError(f"--resolution {spec!r}: expected WIDTHxHEIGHT, e.g. 640x480") from None
    if w < 1 or h < 1:
        raise UserError(f"--resolution {spec!r}: width and height must be positive")
    return w, h


class OpenCVSource(FrameSource):
    """A camera (index or /dev/video*), a network stream URL, or a video file, read with cv2.VideoCapture."""

    def __init__(self, target: int | str, *, live: bool, fps: float | None = None,
                 resolution: tuple[int, int] | None = None, capture_factory: Callable | None = None):
        cv2 = import_cv2()
        self.live = live
        self.name = f"camera {target}" if isinstance(target, int) or str(target).startswith("/dev/") else str(target)
        self._cv2 = cv2
        self._cap = (capture_factory or cv2.VideoCapture)(target)
        if not self._cap.isOpened():
            raise UserError(self._open_hint(target))
        if live:
            self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # fewer stale frames queued in the driver (ignored where unsupported)
            if resolution:
                self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, resolution[0])
                self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, resolution[1])
        else:
            native = self._cap.get(cv2.CAP_PROP_FPS) or 0.0
            self.fps = (native if native > 0 else 30.0) if fps is None else (fps or None)
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT) if not live else 0
        self.frame_count = int(count) if count and count > 0 else None
        self._index = 0
        self._first = self._read_raw()  # a device that opens but never delivers fails now, not mid-stream
        if self._first is None:
            self._cap.release()
            raise UserError(f"{self.name} opened but delivered no frame" +
                            (": is it in use by another program?" if live else ": not a video OpenCV can decode"))

    def _open_hint(self, target: int | str) -> str:
        if isinstance(target, int) or str(target).startswith("/dev/"):
            return (f"cannot open camera {target}: no such device, busy, or no permission "
                    "(`ls /dev/video*` lists cameras; for the Pi camera module use SOURCE picamera)")
        if "://" in str(target):
            return f"cannot open stream {target}: unreachable, or a protocol/codec this OpenCV build lacks"
        return f"cannot open video file {target}: not a video OpenCV can decode"

    def _read_raw(self) -> np.ndarray | None:
        ok, image = self._cap.read()
        if not ok or image is None:
            return None
        if image.ndim == 2:  # a grayscale camera
            image = np.repeat(image[..., None], 3, axis=2)
        return image[..., :3]

    def read(self) -> Frame | None:
        image, self._first = self._first, None
        if image is None:
            image = self._read_raw()
        if image is None and self.live:
            waited = time.monotonic()
            while image is None and time.monotonic() - waited < LOST_AFTER_S:
                time.sleep(0.05)
                image = self._read_raw()
            if image is None:
                raise SourceLost(f"{self.name} stopped delivering frames after {self._index} frames "
                                 "(unplugged, or taken by another program?)")
        if image is None:
            return None
        frame = Frame(image, "BGR", self._index, time.perf_counter())
        self._index += 1
        return frame

    def end_note(self, frames_read: int) -> tuple[str, bool]:
        if self.frame_count and frames_read < self.frame_count - 1:
            return (f"{self.name} ended after {frames_read} of its {self.frame_count} frames: the rest could not "
                    "be decoded (truncated file?)"), True
        return f"{self.name}: end of video after {frames_read} frames", False

    def close(self) -> None:
        self._cap.release()


class PicameraSource(FrameSource):
    """The Raspberry Pi camera module through picamera2 (libcamera), imported only here."""

    live = True
    name = "picamera"

    def __init__(self, resolution: tuple[int, int] | None = None):
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise UserError("the Pi camera needs picamera2, which comes with Raspberry Pi OS: sudo apt install "
                            "python3-picamera2, and make the venv with --system-site-packages so it can see it") from exc
        size = resolution or (640, 480)
        try:
            self._cam = Picamera2()
            # picamera2's "RGB888" is 24 bits per pixel ordered [B, G, R] (its manual, "Image formats").
            config = self._cam.create_preview_configuration(main={"format": "RGB888", "size": tuple(size)})
            self._cam.configure(config)
            self._cam.start()
        except Exception as exc:  # IndexError without a camera, RuntimeError when busy: no common base
            raise UserError(f"cannot open the Pi camera ({_first_line(exc)}): is it connected and enabled? "
                            "`rpicam-hello --list-cameras` lists the cameras libcamera sees") from exc
        self._index = 0

    def read(self) -> Frame | None:
        try:
            image = self._cam.capture_array()
        except Exception as exc:  # the camera went away mid-stream
            raise SourceLost(f"the Pi camera stopped delivering frames after {self._index} frames "
                             f"({_first_line(exc)})") from exc
        frame = Frame(np.asarray(image)[..., :3], "BGR", self._index, time.perf_counter())  # XRGB8888: [B, G, R, 255]
        self._index += 1
        return frame

    def close(self) -> None:
        for step in (self._cam.stop, self._cam.close):
            try:
                step()
            except Exception:  # closing a camera that already failed must not hide the real message
                pass


class ImageFilesSource(FrameSource):
    """Image files replayed as frames, decoded exactly as `edgetune predict` decodes them."""

    def __init__(self, paths: Sequence[str], name: str, load: Callable[[str], np.ndarray], fps: float | None):
        self.paths = list(paths)
        self.name = name
        self.fps = DEFAULT_IMAGE_FPS if fps is None else (fps or None)
        self._load = load
        self._next = 0
        self.errors = 0

    def read(self) -> Frame | None:
        while self._next < len(self.paths):
            path = self.paths[self._next]
            self._next += 1
            try:
                image = self._load(path)
            except ImageError as exc:  # one bad file in a folder is skipped, as predict does
                self.errors += 1
                print(f"edgetune stream: skipped: {exc}", file=sys.stderr, flush=True)
                continue
            return Frame(image, "RGB", self._next - 1, time.perf_counter())
        return None

    def end_note(self, frames_read: int) -> tuple[str, bool]:
        skipped = f" ({self.errors} unreadable, skipped)" if self.errors else ""
        return f"{self.name}: all {frames_read} images replayed{skipped}", False


def open_source(spec: str, *, load_image: Callable[[str], np.ndarray], fps: float | None = None,
                resolution: str | None = None) -> FrameSource:
    """Pick and open the source SPEC names.

    Args:
        spec: A camera index ("0"), a device ("/dev/video0"), "picamera", a URL ("rtsp://..."), a video
            file, an image folder, an image file, or a quoted glob ("frames/*.png").
        load_image: Decodes one image file to uint8 RGB (the contract's decoder, JPEG draft included).
        fps: Replay rate of files (None: the video's own rate, 10 for images; 0: as fast as they are read).
        resolution: Camera capture size "WIDTHxHEIGHT".

    Raises:
        UserError: Nothing to open, or a source that cannot be opened (one line saying why).
    """
    size = parse_resolution(resolution)
    if spec.lower() in PICAMERA_NAMES:
        return PicameraSource(size)
    if spec.isdigit():
        return OpenCVSource(int(spec), live=True, resolution=size)
    if spec.startswith("/dev/"):
        return OpenCVSource(spec, live=True, resolution=size)
    if "://" in spec:
        return OpenCVSource(spec, live=True, resolution=size)
    path = Path(spec)
    if path.is_dir():
        paths = find_images([path])
        if not paths:
            raise UserError(f"no images found in {spec} (looked for {' '.join(IMAGE_SUFFIXES)})")
        return ImageFilesSource(paths, spec, load_image, fps)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFilesSource([spec], spec, load_image, fps)
        return OpenCVSource(spec, live=False, fps=fps)
    if glob.has_magic(spec):
        paths = sorted(p for p in glob.glob(spec) if p.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(p))
        if not paths:
            raise UserError(f"no images match {spec}")
        return ImageFilesSource(paths, spec, load_image, fps)
    raise UserError(f"{spec}: no such file or folder, and not a camera (0, /dev/video0, picamera) or a URL")
