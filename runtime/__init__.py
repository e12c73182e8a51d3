"""edgetune.runtime: the lean predictor for edge devices (numpy, Pillow and one interpreter; no TensorFlow).

    from edgetune.runtime import Predictor
    p = Predictor.from_path("export/int8.tflite")          # metadata from export/int8.json
    probs = p.predict_files(["cat.jpg"])                    # (N, classes), index-aligned with p.labels

Interpreters (LiteRT for .tflite, ONNX Runtime for .onnx) are imported only when a model is loaded.
"""

from edgetune.runtime._backends import DEVICES, TensorDetails, default_threads, open_backend
from edgetune.runtime.image import ImageError, find_images, load_and_preprocess, load_image, preprocess, resize_bilinear
from edgetune.runtime.postprocess import OUTPUT_KINDS, probabilities
from edgetune.runtime.predictor import Predictor, parse_input_range, read_labels

__all__ = [
    "DEVICES",
    "ImageError",
    "OUTPUT_KINDS",
    "Predictor",
    "TensorDetails",
    "default_threads",
    "find_images",
    "load_and_preprocess",
    "load_image",
    "open_backend",
    "parse_input_range",
    "preprocess",
    "probabilities",
    "read_labels",
    "resize_bilinear",
]
