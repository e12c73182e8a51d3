"""edgetune.train: image folders, splits, tf.data input and two-stage MobileNetV2 fine-tuning.

Names are resolved lazily (PEP 562) so that the lean parts (data checks, splits, the config) can
be used without importing TensorFlow.
"""

from __future__ import annotations

from edgetune._lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "edgetune.train.config",
    "RECIPES": "edgetune.train.config",
    "classification_report": "edgetune.train.metrics",
    "train_run": "edgetune.train.trainer",
    "fetch": "edgetune.train.datasets",
    "split_folder": "edgetune.train.folders",
    "scan_tree": "edgetune.train.folders",
    "make_splits": "edgetune.train.splits",
    "find_duplicates": "edgetune.train.duplicates",
    "decode_and_resize": "edgetune.train.data",
    "load_images": "edgetune.train.data",
    "recalibrate_batchnorm": "edgetune.train.model",
    "build_model": "edgetune.train.model",
    "deployment_model": "edgetune.train.model",
    "freeze_for_stage": "edgetune.train.model",
    "load_model": "edgetune.train.model",
    "tune_head": "edgetune.train.tune",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
