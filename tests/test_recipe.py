"""The two recipes, their building blocks (best-weight restore, class weights, schedules) and the metrics."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_class_images, make_image_tree, tiny_train_config

from edgetune import UserError
from edgetune.train.config import RECIPES, TrainConfig, resume_differences


# ---------------------------------------------------------------- recipes and flags
def test_tutorial_recipe_is_the_tutorial_every_number():
    c = TrainConfig(recipe="tutorial").resolve()
    assert (c.epochs, c.learning_rate, c.fine_tune_epochs, c.fine_tune_at, c.dropout) == (10, 1e-4, 10, 100, 0.2)
    assert (c.fine_tune_optimizer, c.fine_tune_learning_rate, c.schedule, c.patience) == ("rmsprop", 1e-5, "constant", 0)
    assert (c.class_weight, c.label_smoothing, c.feature_copies) == ("none", 0.0, 1)
    # the tutorial's stage 2 rate follows the stage 1 rate, as its code does (base_learning_rate / 10)
    assert TrainConfig(recipe="tutorial", learning_rate=1e-3).resolve().fine_tune_learning_rate == pytest.approx(1e-4)


def test_flags_override_the_recipe_and_unset_means_the_recipe_decides():
    assert TrainConfig().recipe == "default"
    assert all(getattr(TrainConfig(), k) is None for k in RECIPES["default"])  # unset, explicitly
    c = TrainConfig(recipe="default", epochs=5, class_weight="none").resolve()
    assert (c.epochs, c.class_weight) == (5, "none")
    assert c.learning_rate == RECIPES["default"]["learning_rate"] and c.patience == RECIPES["default"]["patience"]
    assert all(getattr(c, k) is not None for k in RECIPES["default"])


def test_help_says_what_each_recipe_does(capsys):
    from edgetune.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--recipe {default,tutorial}" in out and "early stopping" in out and "RMSprop 1e-5" in out
    assert "tutorial 1e-4, default 1e-3" in out


@pytest.mark.parametrize("flag, value, message", [
    ("learning_rate", float("inf"), "--learning-rate must be a finite number"),
    ("learning_rate", float("nan"), "--learning-rate must be a finite number"),
    ("patience", -1, "--patience"),
    ("label_smoothing", 0.7, "--label-smoothing"),
    ("recipe", "fast", "--recipe must be one of"),
])
def test_bad_recipe_values_are_refused(flag, value, message):
    with pytest.raises(UserError, match=message):
        TrainConfig(**{flag: value}).validate()


def test_resume_differences_list_the_flags_that_change_the_result(tmp_path):
    saved = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(TrainConfig(data=tmp_path).resolve()).items()}
    assert resume_differences(saved, TrainConfig(data=tmp_path, verbose=0, resume=True)) == []
    diffs = resume_differences(saved, TrainConfig(data=tmp_path, image_size=96, recipe="tutorial", resume=True))
    assert any(d.startswith("--image-size: 160 then, 96 now") for d in diffs)
    assert any(d.startswith("--recipe") for d in diffs) and any(d.startswith("--learning-rate") for d in diffs)


# ---------------------------------------------------------------- building blocks
def test_balanced_class_weights_make_every_class_weigh_the_same():
    from edgetune.train.recipe import class_weights

    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    w = class_weights(labels, 3, "balanced")
    assert w == pytest.approx({0: 100 / 180, 1: 100 / 90, 2: 100 / 30})
    totals = [w[c] * (labels == c).sum() for c in range(3)]
    assert max(totals) == pytest.approx(min(totals))
    assert class_weights(labels, 3, "none") is None


def test_warmup_then_cosine_schedule():
    from edgetune.train.recipe import learning_rate

    assert learning_rate(1e-3, "constant", 10, 20, 1.0) == 1e-3
    sched = learning_rate(1e-3, "cosine", 10, 20, 1.0)
    rates = [float(sched(step)) for step in (0, 10, 20, 110, 199)]
    assert rates[0] == pytest.approx(0.0, abs=1e-9) and rates[1] == pytest.approx(5e-4, rel=1e-3)
    assert rates[2] == pytest.approx(1e-3, rel=1e-3) and rates[3] == pytest.approx(5e-4, rel=2e-2) and rates[4] < 1e-5


def test_smoothed_sparse_crossentropy_matches_one_hot_label_smoothing():
    import keras

    from edgetune.train.recipe import SparseSmoothedCrossentropy

    rng = np.random.default_rng(0)
    logits, y = rng.normal(size=(8, 5)).astype("float32"), rng.integers(0, 5, 8)
    want = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(np.eye(5)[y], logits)
    got = SparseSmoothedCrossentropy(0.1)(y, logits)
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    assert SparseSmoothedCrossentropy.from_config(SparseSmoothedCrossentropy(0.1).get_config()).label_smoothing == 0.1


def test_best_weights_are_restored_and_training_stops_after_patience(tmp_path):
    import keras

    from edgetune.train.callbacks import BestWeights

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    best = BestWeights(model, patience=2, folder=tmp_path)
    best.set_model(model)
    model.stop_training = False  # what fit() sets before the first epoch
    losses = [1.0, 0.5, 0.7, 0.6, 0.4]  # best at epoch 2; epochs 3 and 4 are worse -> stop after epoch 4
    for epoch, loss in enumerate(losses):
        model.set_weights([np.full((1, 1), float(epoch + 1))])
        best.on_epoch_end(epoch, {"val_loss": loss})
        if model.stop_training:
            break
    assert epoch == 3 and best.stopped_early and best.best_epoch == 2
    best.restore()
    assert model.get_weights()[0][0, 0] == 2.0  # epoch 2's weights, not the last epoch's (4.0)
    off = BestWeights(model, patience=0, folder=tmp_path)
    off.on_epoch_end(0, {"val_loss": 0.1})
    model.set_weights([np.full((1, 1), 9.0)])
    off.restore()
    assert model.get_weights()[0][0, 0] == 9.0  # patience 0: the last weights stay (the tutorial)


def test_checkpoints_inside_a_stage_are_throttled_and_best_weights_survive_a_resume(tmp_path):
    import keras

    from edgetune.train.callbacks import BestWeights, EpochCheckpoint

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    best = BestWeights(model, patience=3, folder=tmp_path)
    ckpt = EpochCheckpoint(tmp_path, 1, {}, model, best=best, every=3600.0)
    for cb in (best, ckpt):
        cb.set_model(model)
    model.stop_training = False
    state = lambda: json.loads((tmp_path / "state.json").read_text())  # noqa: E731
    for epoch, loss in enumerate([1.0, 0.5, 0.7]):
        model.set_weights([np.full((1, 1), float(epoch + 1))])
        best.on_epoch_end(epoch, {"val_loss": loss})
        ckpt.on_epoch_end(epoch, {"val_loss": loss})
        assert state()["epochs_done"] == 1  # the first epoch is saved, the next ones wait for `every` seconds
    assert ckpt.history["val_loss"] == [1.0, 0.5, 0.7]  # the history still records every epoch
    model.stop_training = True  # early stop (or a stage's end) is always saved, with the best epoch's weights
    ckpt.on_epoch_end(3, {"val_loss": 0.9})
    assert state()["epochs_done"] == 4 and state()["best"]["best_epoch"] == 2
    resumed = BestWeights(model, patience=3, folder=tmp_path, state=state()["best"])
    model.set_weights([np.full((1, 1), 7.0)])
    resumed.restore()
    assert model.get_weights()[0][0, 0] == 2.0  # epoch 2's weights, read back from best.npz


def test_fine_tune_at_0_trains_the_whole_base_on_the_fast_path(tiny_dataset):
    """Layer 0 is the base's InputLayer: the fast path caches the preprocessed images and trains every layer."""
    from edgetune.train.features import FastPath
    from edgetune.train.model import BASE, build_model, freeze_for_stage
    from edgetune.train.splits import make_splits

    cfg = tiny_train_config(tiny_dataset, tiny_dataset / "unused", feature_copies=0, fine_tune_at=0).resolve()
    splits = make_splits(tiny_dataset, progress=False)
    model, _ = build_model(2, (48, 48), cfg.weights, seed=0)
    fast = FastPath(model, cfg, splits, (48, 48))
    assert fast.stage2 and fast.n_front == 1 and fast.val[0].shape[1:] == (48, 48, 3)
    freeze_for_stage(model, 2, 0)
    import keras

    weighted = [layer for layer in model.get_layer(BASE).layers if layer.weights]
    assert all(layer.trainable != isinstance(layer, keras.layers.BatchNormalization) for layer in weighted)
    from edgetune.train import load_images

    x = load_images([s.path for s in splits.val], (48, 48))
    logits_top = fast.top_model()(np.asarray(fast.val[0]), training=False).numpy()
    np.testing.assert_allclose(logits_top, model(x, training=False).numpy(), atol=1e-4)


# ---------------------------------------------------------------- metrics
def test_classification_report_on_a_known_confusion():
    from edgetune.train.metrics import classification_report

    labels = np.array([0] * 8 + [1] * 2 + [2] * 4)
    preds = np.array([0] * 8 + [0, 0] + [2, 2, 2, 1])
    r = classification_report(labels, preds, ["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(11 / 14) and (r["correct"], r["n"]) == (11, 14)
    assert r["per_class"]["a"] == {"precision": 0.8, "recall": 1.0, "f1": pytest.approx(0.8889, abs=1e-4), "support": 8}
    assert r["per_class"]["b"]["recall"] == 0.0 and r["per_class"]["b"]["precision"] == 0.0
    assert r["balanced_accuracy"] == pytest.approx((1 + 0 + 0.75) / 3, abs=1e-4)
    assert r["macro_f1"] == pytest.approx((0.8889 + 0 + 0.8571) / 3, abs=1e-3) and r["worst_recall"] == 0.0
    assert r["top_confusions"][0] == {"true": "b", "predicted": "a", "count": 2, "share_of_true": 1.0}
    assert r["matrix"] == [[8, 0, 0], [2, 0, 0], [0, 1, 3]]


def test_confusion_matrix_png_stays_readable_at_43_classes(tmp_path):
    from PIL import Image

    from edgetune.train.report import plot_confusion

    rng = np.random.default_rng(0)
    names = [f"class_{i:02d}" for i in range(43)]
    m = np.diag(rng.integers(20, 30, 43)) + rng.integers(0, 2, (43, 43))
    plot_confusion(m, names, tmp_path / "big.png")
    plot_confusion(m[:2, :2], names[:2], tmp_path / "small.png")
    big, small = Image.open(tmp_path / "big.png"), Image.open(tmp_path / "small.png")
    assert big.width >= 43 * 0.45 * 100 and big.width > 2 * small.width  # grows with the class count
    assert big.height / 43 >= 40  # at least 40 pixels per class row at 100 dpi


# ---------------------------------------------------------------- end to end on tiny data
def test_default_recipe_run_records_resolved_values_and_per_class_metrics(tmp_path):
    from edgetune.train import train_run

    data = tmp_path / "d"
    for k, (name, count) in enumerate((("a", 18), ("b", 12), ("c", 6))):  # uneven classes
        make_class_images(data / name, k, count)
    run = train_run(tiny_train_config(data, tmp_path / "run", epochs=3, fine_tune_epochs=1, patience=1))
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"] == "default" and config["class_weight"] == "balanced" and config["schedule"] == "cosine"
    assert all(config[k] is not None for k in RECIPES["default"]) and config["fine_tune_learning_rate"] == pytest.approx(1e-4)
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("val", "test"):
        m = metrics["final"][split]
        assert set(m["per_class"]) == {"a", "b", "c"} and sum(v["support"] for v in m["per_class"].values()) == m["n"]
        recalls = [v["recall"] for v in m["per_class"].values()]
        assert m["balanced_accuracy"] == pytest.approx(np.mean(recalls), abs=1e-3) and m["worst_recall"] == min(recalls)
    s1 = metrics["stage1"]
    assert 1 <= s1["epochs_run"] <= 3 and (s1["best_epoch"] is None or 1 <= s1["best_epoch"] <= s1["epochs_run"])
    assert isinstance(metrics["confusion"]["top_confusions"], list)
    from edgetune.contract import read_metadata

    meta = read_metadata(run)
    assert meta.source["alpha"] == 1.0 and isinstance(meta.source["alpha"], float) and meta.source["recipe"] == "default"


def test_early_stopping_restores_the_best_epoch_in_a_real_run(tmp_path):
    """The final model is the best validation-loss epoch's, not the last one's."""
    from edgetune.train import train_run

    make_image_tree(tmp_path / "d", per_class=10)
    # A rate this high makes the validation loss jump around, so the last epoch is rarely the best.
    run = train_run(tiny_train_config(tmp_path / "d", tmp_path / "run", epochs=6, fine_tune_epochs=0, patience=2,
                                      learning_rate=0.5, schedule="constant", warmup_epochs=0.0))
    metrics = json.loads((run / "metrics.json").read_text())
    history = json.loads((run / "history.json").read_text())
    s1 = metrics["stage1"]
    val_losses = history["val_loss"][: s1["epochs_run"]]
    assert s1["best_epoch"] == int(np.argmin(val_losses)) + 1
    assert metrics["final"]["val"]["loss"] == pytest.approx(min(val_losses), rel=1e-3, abs=1e-3)


def test_tune_searches_the_head_on_cached_features_and_trains_with_the_winner(tmp_path):
    """--tune: every candidate is recorded, the lowest unsmoothed val loss wins, and stage 1 trains with it."""
    from edgetune.train import train_run
    from edgetune.train.tune import LABEL_SMOOTHING, LEARNING_RATE_FACTORS, _cross_entropy

    data = tmp_path / "d"
    for k, (name, count) in enumerate((("a", 14), ("b", 10), ("c", 8))):
        make_class_images(data / name, k, count)
    run = train_run(tiny_train_config(data, tmp_path / "run", epochs=3, fine_tune_epochs=1, patience=2, tune=True))
    tune = json.loads((run / "metrics.json").read_text())["tune"]
    rates = sorted({c["learning_rate"] for c in tune["candidates"]})
    assert rates == pytest.approx(sorted(1e-3 * f for f in LEARNING_RATE_FACTORS))
    assert len(tune["candidates"]) == len(LEARNING_RATE_FACTORS) * len(LABEL_SMOOTHING)
    best = min(tune["candidates"], key=lambda c: (c["val_loss"], -c["val_accuracy"]))
    assert tune["chosen"] == {"learning_rate": best["learning_rate"], "label_smoothing": best["label_smoothing"]}
    config = json.loads((run / "config.json").read_text())
    assert config["tune"] is True and config["fine_tune_learning_rate"] == pytest.approx(1e-4)  # stage 2 untouched
    # the rule's loss is plain cross entropy, whatever smoothing a candidate trained with
    assert _cross_entropy(np.array([[0.0, 0.0], [10.0, -10.0]]), np.array([0, 0]))[0] == pytest.approx(np.log(2) / 2, abs=1e-6)
    assert _cross_entropy(np.array([[0.0], [0.0]]), np.array([1, 0])) == (pytest.approx(np.log(2)), 0.5)


def test_tune_needs_cached_features():
    with pytest.raises(UserError, match="--tune"):
        TrainConfig(tune=True, cache_features="off").validate()
