"""Fine-tune MobileNetV2 on image folders: the tutorial's two-stage recipe, into a run dir.

Stage 1 trains a new head on the frozen ImageNet base (Adam); stage 2 unfreezes the base from
--fine-tune-at up (RMSprop at learning_rate / 10), BatchNorm kept in inference mode throughout.
"""

from __future__ import annotations

import argparse

from edgetune._config import add_config_args, config_from_args
from edgetune.train.config import TrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser, TrainConfig)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(TrainConfig, args)
    cfg.validate()  # before importing TensorFlow: bad flags fail in a fraction of a second
    from edgetune.train.trainer import train_run

    out = train_run(cfg)
    import json

    from edgetune.stats import format_accuracy

    metrics = json.loads((out / "metrics.json").read_text())
    for stage in ("stage1", "stage2"):
        if stage in metrics:
            m = metrics[stage]
            # n is missing from a stage 1 that an older edgetune finished before --resume
            val, test = (format_accuracy(m[s]["accuracy"], m[s]["n"]) if "n" in m[s] else f"{m[s]['accuracy']:.4f}" for s in ("val", "test"))
            print(f"{stage}: {m['epochs']} epochs in {m['seconds']:.0f} s, val accuracy {val}, test accuracy {test}")
    print(f"run dir: {out}")
    return 0
