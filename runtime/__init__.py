"""edgetune.runtime: the lean predictor for edge devices (numpy, Pillow and one interpreter; no TensorFlow).

    from edgetune.runtime import Predictor
    p = Predictor.from_path("export/tflite_int8.tflite")    # metadata from export/tflite_int8.json
    probs = p.predict_files(["cat.jpg"])                    # (N, classes), index-aligned with p.labels
    probs = p.predict_files(paths, interpreters=2)          # a folder: 2 interpreters side by side

    from edgetune.runtime import StreamRunner, open_source  # what `edgetune stream` runs
    runner = StreamRunner(open_source("0", load_image=p.decode), p, emit=print)
    stats = runner.run()                                    # until the source ends or Ctrl-C

Interpreters (LiteRT for .tflite, ONNX Runtime for .onnx) are imported only when a model is loaded;
OpenCV and picamera2 only when a stream opens a camera, video or URL. A program classifying many images
may call `keep_freed_memory()` once, as the `edgetune` command does (glibc's malloc otherwise hands each
image's buffers back to the kernel and page-faults them in again for the next one).
"""

from edgetune._memory import keep_freed_memory
from edgetune.runtime._backends import DEVICES, TensorDetails, default_threads, open_backend
from edgetune.runtime._parallel import default_decode_workers, default_interpreters, map_ordered, map_ordered_pooled
from edgetune.runtime.image import (ImageError, decode_for_contract, find_images, load_and_preprocess, load_for_contract,
                                     load_image, preprocess, resize_bilinear)
from edgetune.runtime.postprocess import OUTPUT_KINDS, probabilities
from edgetune.runtime.predictor import Predictor, parse_input_range, read_labels
from edgetune.runtime.sources import Frame, FrameSource, SourceLost, open_source
from edgetune.runtime.stream import STATS_KIND, Decision, StreamRunner, StreamStats, frame_to_input

__all__ = [
    "DEVICES",
    "Decision",
    "Frame",
    "FrameSource",
    "ImageError",
    "OUTPUT_KINDS",
    "Predictor",
    "STATS_KIND",
    "SourceLost",
    "StreamRunner",
    "StreamStats",
    "TensorDetails",
    "default_decode_workers",
    "default_interpreters",
    "decode_for_contract",
    "default_threads",
    "find_images",
    "frame_to_input",
    "keep_freed_memory",
    "load_and_preprocess",
    "load_for_contract",
    "load_image",
    "map_ordered",
    "map_ordered_pooled",
    "open_backend",
    "open_source",
    "parse_input_range",
    "preprocess",
    "probabilities",
    "read_labels",
    "resize_bilinear",
]
