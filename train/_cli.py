"""Fine-tune MobileNetV2 on image folders, in two stages, into a run dir.

Stage 1 trains a new head on the frozen ImageNet base; stage 2 unfreezes the base from --fine-tune-at
up, BatchNorm kept in inference mode throughout. --recipe picks the values of every flag not given:

  default   better than the tutorial's on cats-vs-dogs, trashnet and a long-tailed CIFAR-10 (see the
            README): stage 1 up to 30 epochs of Adam 1e-3, stage 2 up to 10 epochs of Adam 1e-4 from
            layer 100, each with a 1-epoch linear warm-up then cosine decay, early stopping on the
            validation loss (patience 5) with the best epoch's weights restored, and class weights
            that balance uneven classes.
  tutorial  TensorFlow's "Transfer learning and fine-tuning" exactly: 10 epochs of Adam 1e-4, then
            10 epochs of RMSprop 1e-5 from layer 100, constant rates, no early stopping.

A flag given on the command line overrides the recipe's value (e.g. --recipe default --epochs 5);
config.json in the run dir records every resolved value.
"""

from __future__ import annotations

import argparse

from edgetune._config import add_config_args, config_from_args
from edgetune.train.config import TrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser, TrainConfig)


def _summary(name: str, m: dict) -> str:
    from edgetune.stats import format_accuracy

    # n is missing from a stage that an older edgetune finished before --resume
    val, test = (format_accuracy(m[s]["accuracy"], m[s]["n"]) if "n" in m[s] else f"{m[s]['accuracy']:.4f}" for s in ("val", "test"))
    extra = ""
    if "macro_f1" in m["test"]:
        extra = f", macro F1 {m['test']['macro_f1']:.3f}, balanced accuracy {m['test']['balanced_accuracy'] * 100:.1f}%"
    epochs = m.get("epochs_run", m["epochs"])
    best = f" (best {m['best_epoch']})" if m.get("best_epoch") else ""
    return f"{name}: {epochs} epochs{best} in {m['seconds']:.0f} s, val accuracy {val}, test accuracy {test}{extra}"


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(TrainConfig, args)
    cfg.validate()  # before importing TensorFlow: bad flags fail in a fraction of a second
    from edgetune.train.trainer import train_run

    out = train_run(cfg)
    import json

    if not (out / "metrics.json").is_file():  # a multi-worker worker other than the chief: nothing of its own
        print(f"this worker's part is done; the chief writes the run dir {out}")
        return 0
    metrics = json.loads((out / "metrics.json").read_text())
    for stage in ("stage1", "stage2"):
        if stage in metrics:
            print(_summary(stage, metrics[stage]))
    for pair in metrics.get("confusion", {}).get("top_confusions", [])[:3]:
        print(f"  most confused: {pair['true']} -> {pair['predicted']} ({pair['count']} test images)")
    print(f"run dir: {out}")
    return 0
