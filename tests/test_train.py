"""`edgetune train`: the run dir contract, the recipe's invariants and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CATS_DOGS, IMAGENET_NO_TOP, make_class_images, make_image_tree, pretrained_weights_or_none, tiny_train_config
from PIL import Image

from edgetune.cli import main
from edgetune.contract import read_metadata, read_split, sha256_file

TINY_FLAGS = ["--image-size", "48", "--batch-size", "8", "--epochs", "1", "--fine-tune-epochs", "1", "--verbose", "0"]


def _train(data: Path, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--out", str(out), "--weights", pretrained_weights_or_none(), *TINY_FLAGS, *extra])


# ---------------------------------------------------------------- bad input: one message, exit 2
def _one_class(tmp: Path) -> Path:
    make_class_images(tmp / "d" / "cats", 0, 4)
    return tmp / "d"


def _empty_class(tmp: Path) -> Path:
    make_image_tree(tmp / "d", per_class=4)
    for p in (tmp / "d" / "dogs").iterdir():
        p.unlink()
    return tmp / "d"


def _unreadable(tmp: Path) -> Path:
    for c in ("cats", "dogs"):
        (tmp / "d" / c).mkdir(parents=True)
        (tmp / "d" / c / "x.jpg").write_bytes(b"garbage")
    return tmp / "d"


@pytest.mark.parametrize(
    "make_data, extra, message",
    [
        (lambda t: t / "missing", [], "does not exist"),
        (_one_class, [], "at least two class folders"),
        (_empty_class, [], "no readable images"),
        (_unreadable, [], "no readable images"),
        (lambda t: make_image_tree(t / "d", per_class=4), ["--epochs", "0"], "--epochs must be >= 1"),
        (lambda t: make_image_tree(t / "d", per_class=4), ["--dropout", "1.5"], "--dropout"),
        (lambda t: make_image_tree(t / "d", per_class=4), ["--image-size", "8"], "--image-size"),
        (lambda t: make_image_tree(t / "d", per_class=4), ["--weights", "/nonexistent.weights.h5"], "does not exist"),
    ],
    ids=["missing-folder", "one-class", "empty-class", "no-readable-images", "epochs-0", "dropout", "image-size", "weights-missing"],
)
def test_bad_input_is_one_clear_message(tmp_path, capsys, make_data, extra, message):
    data = make_data(tmp_path)
    assert _train(data, tmp_path / "run", *extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_weights_file_of_the_wrong_shape(tmp_path, capsys):
    import keras

    wrong = keras.applications.MobileNetV2(input_shape=(48, 48, 3), alpha=0.5, include_top=False, weights=None)
    wrong.save_weights(tmp_path / "alpha05.weights.h5")
    make_image_tree(tmp_path / "d", per_class=4)
    assert main(["train", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "run"), "--weights",
                 str(tmp_path / "alpha05.weights.h5"), *TINY_FLAGS]) == 2
    assert "does not fit MobileNetV2" in capsys.readouterr().err


def test_fine_tune_at_beyond_the_base(tmp_path, capsys):
    make_image_tree(tmp_path / "d", per_class=4)
    assert _train(tmp_path / "d", tmp_path / "run", "--fine-tune-at", "999") == 2
    assert "--fine-tune-at 999" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- the run dir
def test_run_dir_is_complete_and_self_describing(tiny_run_dir):
    run = tiny_run_dir
    for name in ("model.keras", "saved_model", "labels.txt", "metadata.json", "config.json", "history.json",
                 "metrics.json", "learning_curves.png", "sample_predictions.png", "confusion_matrix.png", "tb"):
        assert (run / name).exists(), name
    assert not run.with_name(run.name + ".partial").exists()
    assert not (run / "checkpoint").exists()
    assert list((run / "tb").rglob("events.out.tfevents.*"))
    meta = read_metadata(run)
    assert meta.labels == ["cats", "dogs"] == (run / "labels.txt").read_text().split()
    assert meta.output_kind == "binary_logit" and meta.output.shape == [1, 1]
    assert meta.input.shape == [1, 48, 48, 3] and meta.preprocessing.size == (48, 48)
    assert meta.preprocessing.input_range == (0.0, 255.0)
    assert meta.source["sha256"] == sha256_file(run / "model.keras")
    assert meta.versions["tensorflow"] and meta.versions["keras"]
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("initial", "stage1", "stage2", "final", "confusion"):
        assert key in metrics
    # The reported final test accuracy is what the saved confusion matrix says, image by image.
    matrix = np.array(metrics["confusion"]["matrix"])
    assert matrix.sum() == metrics["final"]["test"]["n"] == len(read_split(run, "test"))
    assert metrics["final"]["test"]["correct"] == int(np.trace(matrix))
    for stage in ("stage1", "stage2"):
        assert metrics[stage]["seconds"] > 0
        assert {"macro_f1", "balanced_accuracy", "per_class"} <= set(metrics[stage]["test"])
        for split, files in (("val", read_split(run, "val")), ("test", read_split(run, "test"))):
            m = metrics[stage][split]
            assert m["n"] == len(files) and m["correct"] == round(m["accuracy"] * m["n"])
            assert m["ci95"][0] <= m["accuracy"] <= m["ci95"][1]
    history = json.loads((run / "history.json").read_text())
    assert len(history["val_accuracy"]) == 2 and history["stage1_epochs"] == 1
    assert json.loads((run / "config.json").read_text())["image_size"] == 48


def test_splits_are_disjoint_and_test_is_held_out_of_validation(tiny_run_dir):
    train, val, test = (read_split(tiny_run_dir, s) for s in ("train", "val", "test"))
    assert all(p.is_file() for p, _ in train + val + test)
    names = [set(map(str, (p for p, _ in s))) for s in (train, val, test)]
    assert not (names[0] & names[1]) and not (names[1] & names[2]) and not (names[0] & names[2])
    assert len(train) == 32 and len(val) + len(test) == 20
    assert len(test) == 4 and {lbl for _, lbl in test} == {0, 1}  # 20% of validation, stratified
    assert all("validation" in str(p) for p, _ in test)


def test_saved_model_and_deployment_graph_match_the_keras_model(tiny_run_dir):
    import tensorflow as tf

    from edgetune.train import load_images, load_model
    from edgetune.train.model import deployment_model

    model = load_model(tiny_run_dir)
    files = [p for p, _ in read_split(tiny_run_dir, "test")]
    x = load_images(files, (48, 48))
    keras_logits = model.predict(x, verbose=0)
    loaded = tf.saved_model.load(str(tiny_run_dir / "saved_model"))  # keep a reference: its variables live here
    served = loaded.serve(tf.constant(x)).numpy()
    # the SavedModel every export is converted from ends in per-class probabilities ([1 - sigmoid, sigmoid] here)
    from edgetune.runtime import probabilities

    assert served.shape == (len(files), 2)
    np.testing.assert_allclose(served, probabilities(keras_logits, "binary_logit"), atol=1e-5)
    np.testing.assert_allclose(deployment_model(model).predict(x, verbose=0), keras_logits, atol=1e-5)
    assert np.ptp(keras_logits) > 1e-3, "outputs must differ across inputs, or parity tests test nothing"


# ---------------------------------------------------------------- recipe invariants
def _bn_stats(model):
    import keras

    from edgetune.train.model import BASE

    return [w.numpy().copy() for layer in model.get_layer(BASE).layers if isinstance(layer, keras.layers.BatchNormalization)
            for w in (layer.moving_mean, layer.moving_variance)]


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_batchnorm_statistics_do_not_move_in_fine_tuning(freeze_bn):
    """The Keras 3 trap: training=False alone lets unfrozen BatchNorm statistics move; freezing stops it."""
    import keras

    from edgetune.train.model import BASE, build_model, freeze_for_stage

    rng = np.random.default_rng(0)
    model, _ = build_model(2, (48, 48), pretrained_weights_or_none(), seed=0)
    if pretrained_weights_or_none() == "none":
        from edgetune.train.model import recalibrate_batchnorm

        recalibrate_batchnorm(model, [(rng.uniform(0, 255, (16, 48, 48, 3)).astype("float32"), None)])
    freeze_for_stage(model, 2, fine_tune_at=100)
    if not freeze_bn:  # what the tutorial's code does under Keras 3
        for layer in model.get_layer(BASE).layers[100:]:
            layer.trainable = True
    before = _bn_stats(model)
    model.compile(optimizer=keras.optimizers.RMSprop(1e-5), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(rng.uniform(0, 255, (16, 48, 48, 3)).astype("float32"), rng.integers(0, 2, (16, 1)).astype("float32"),
              epochs=1, batch_size=8, verbose=0)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(before, _bn_stats(model)))
    if freeze_bn:
        assert moved == 0.0
    else:
        assert moved > 0.0  # proves the check above can fail


def test_augmentation_draws_flip_and_rotation_independently():
    """Seeded alike, Keras' RandomFlip and RandomRotation flipped exactly the images they tilted one way."""
    from edgetune.train.model import AUGMENTATION, DROPOUT, augmentation_layer, build_model, layer_seeds

    # A horizontal ramp: a flip reverses it; a rotation tilts it (sign of the top-left minus bottom-left level).
    x = np.zeros((256, 32, 32, 3), "float32")
    x[:] = np.linspace(0, 255, 32)[None, None, :, None]
    for seed in (0, 1):
        flip, rotate = augmentation_layer(0.2, True, seed).layers
        flipped = [np.asarray(flip(x, training=True))[:, 16, 0, 0] > 127 for _ in range(2)]
        tilted = [np.sign(np.asarray(rotate(x, training=True))[:, 2, 4:12, 0].mean(1) - 127.5) for _ in range(2)]
        for f, t in zip(flipped, tilted):
            assert 96 < f.sum() < 160  # about half flipped
            assert abs(np.corrcoef(f.astype(float), t)[0, 1]) < 0.3  # the shared-seed bug gave -1.0
    assert layer_seeds(0, 2) == layer_seeds(0, 2) != layer_seeds(1, 2)  # repeatable per run seed
    model, _ = build_model(2, (48, 48), "none", seed=0)
    seeds = [layer.seed for layer in model.get_layer(AUGMENTATION).layers] + [model.get_layer(DROPOUT).seed]
    assert len(set(seeds)) == 3, seeds



def test_zoom_crops_in_with_its_own_seed_and_leaves_the_other_layers_alone():
    from edgetune import UserError
    from edgetune.train import TrainConfig
    from edgetune.train.model import augmentation_layer

    plain = augmentation_layer(0.2, True, 0).layers
    zoomed = augmentation_layer(0.2, True, 0, zoom=0.5).layers
    assert [layer.seed for layer in zoomed[:2]] == [layer.seed for layer in plain]  # old runs draw as before
    assert zoomed[2].seed not in (plain[0].seed, plain[1].seed)
    # A centred square on black: zooming in can only make it cover more of the image, never less.
    x = np.zeros((64, 32, 32, 3), "float32")
    x[:, 8:24, 8:24] = 255.0
    covered = (np.asarray(zoomed[2](x, training=True))[..., 0] > 127).mean(axis=(1, 2))
    assert covered.min() >= 0.25 - 0.02 and covered.max() > 0.4  # 0.25 unzoomed; up to 1.0 at a 2x zoom
    assert np.array_equal(np.asarray(zoomed[2](x, training=False)), x)  # inactive outside fit
    with pytest.raises(UserError, match="--zoom"):
        TrainConfig(zoom=1.0).validate()

def test_trained_run_keeps_pretrained_batchnorm_statistics(tiny_run_dir):
    if not IMAGENET_NO_TOP.is_file():
        pytest.skip("needs the pretrained weights to compare against")
    import keras

    from edgetune.train import load_model
    from edgetune.train.model import build_base

    reference, _ = build_base((48, 48), str(IMAGENET_NO_TOP))
    ref = [w.numpy() for layer in reference.layers if isinstance(layer, keras.layers.BatchNormalization)
           for w in (layer.moving_mean, layer.moving_variance)]
    got = _bn_stats(load_model(tiny_run_dir))
    assert len(ref) == len(got) > 0
    assert max(float(np.abs(a - b).max()) for a, b in zip(ref, got)) == 0.0


def test_weights_none_recalibrates_batchnorm_so_outputs_differ():
    from edgetune.train.model import build_model, recalibrate_batchnorm

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 48, 48, 3)).astype("float32")
    x[:4, :24] = 250.0
    model, source = build_model(2, (48, 48), "none", seed=0)
    assert source == "none"
    recalibrate_batchnorm(model, [(x, None)])
    features = model.get_layer("mobilenetv2_base")(model.get_layer("preprocess")(x), training=False).numpy()
    assert features.reshape(8, -1).std(axis=0).max() > 1e-3


# ---------------------------------------------------------------- layouts, bad files, classes
def test_single_tree_is_split_deterministically(tmp_path):
    from edgetune.train.splits import make_splits

    make_image_tree(tmp_path / "t", classes=("a", "b", "c"), per_class=10)
    s1, s2 = make_splits(tmp_path / "t", 0.2, seed=5, progress=False), make_splits(tmp_path / "t", 0.2, seed=5, progress=False)
    assert [x.path for x in s1.test] == [x.path for x in s2.test]
    assert (len(s1.train), len(s1.val), len(s1.test)) == (18, 6, 6)
    s3 = make_splits(tmp_path / "t", 0.2, seed=6, progress=False)
    assert [x.path for x in s3.test] != [x.path for x in s1.test]


def test_train_and_test_layout_holds_validation_out_of_train(tmp_path):
    from edgetune.train.splits import make_splits

    make_image_tree(tmp_path / "d" / "train", per_class=10)
    make_image_tree(tmp_path / "d" / "test", per_class=3, seed=4)
    s = make_splits(tmp_path / "d", 0.2, 0, progress=False)
    assert len(s.test) == 6 and all("/test/" in str(x.path) for x in s.test)
    assert len(s.val) == 4 and all("/train/" in str(x.path) for x in s.val)


def test_unreadable_files_are_skipped_with_a_warning(tmp_path):
    from edgetune.train.splits import make_splits

    make_image_tree(tmp_path / "d", per_class=10)
    (tmp_path / "d" / "cats" / "corrupt.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.warns(UserWarning, match="corrupt.jpg"):
        s = make_splits(tmp_path / "d", 0.2, 0, progress=False)
    assert [x.path.name for x in s.skipped] == ["corrupt.jpg"]
    assert all(x.path.name != "corrupt.jpg" for x in s.train + s.val + s.test)


def test_mismatched_classes_across_splits(tmp_path):
    from edgetune import UserError
    from edgetune.train.splits import make_splits

    make_image_tree(tmp_path / "d" / "train", per_class=4)
    make_image_tree(tmp_path / "d" / "validation", classes=("cats", "birds"), per_class=4)
    with pytest.raises(UserError, match="must match"):
        make_splits(tmp_path / "d", progress=False)


def test_three_classes_give_softmax_logits(tmp_path):
    from edgetune.train import train_run

    make_image_tree(tmp_path / "d", classes=("a", "b", "c"), per_class=10)
    run = train_run(tiny_train_config(tmp_path / "d", tmp_path / "run", fine_tune_epochs=0))
    meta = read_metadata(run)
    assert meta.output_kind == "softmax_logits" and meta.output.shape == [1, 3] and meta.labels == ["a", "b", "c"]
    assert "stage2" not in json.loads((run / "metrics.json").read_text())


# ---------------------------------------------------------------- atomicity and resume
def test_interrupted_run_never_looks_complete_and_resumes(tiny_dataset, tmp_path, monkeypatch):
    from edgetune.train import train_run, trainer

    cfg = tiny_train_config(tiny_dataset, tmp_path / "run", epochs=2, fine_tune_epochs=1)
    real = trainer.EpochCheckpoint.on_epoch_end

    def crash_after_first_epoch(self, epoch, logs=None):
        real(self, epoch, logs)
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(trainer.EpochCheckpoint, "on_epoch_end", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg)
    assert not (tmp_path / "run").exists()
    partial = tmp_path / "run.partial"
    assert json.loads((partial / "checkpoint" / "state.json").read_text())["epochs_done"] == 1
    assert not (partial / "metadata.json").exists()

    monkeypatch.setattr(trainer.EpochCheckpoint, "on_epoch_end", real)
    cfg.resume = True
    run = train_run(cfg)
    history = json.loads((run / "history.json").read_text())
    assert len(history["accuracy"]) == 3  # 1 epoch before the crash + 1 resumed + 1 fine-tuning
    assert read_metadata(run).labels == ["cats", "dogs"]
    assert not partial.exists()


def test_resume_refuses_flags_that_differ_from_the_interrupted_run(tiny_dataset, tmp_path, monkeypatch, capsys):
    from edgetune.train import trainer

    def crash(self, epoch, logs=None):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(trainer.EpochCheckpoint, "on_epoch_end", crash)
    with pytest.raises(KeyboardInterrupt):
        trainer.train_run(tiny_train_config(tiny_dataset, tmp_path / "run", epochs=2))
    monkeypatch.undo()
    (tmp_path / "run.partial" / "checkpoint").mkdir(exist_ok=True)
    (tmp_path / "run.partial" / "checkpoint" / "state.json").write_text('{"stage": 1, "epochs_done": 1, "history": {}}')
    assert _train(tiny_dataset, tmp_path / "run", "--resume", "--epochs", "2", "--image-size", "64") == 2
    err = capsys.readouterr().err
    assert "--image-size: 48 then, 64 now" in err and "--epochs" not in err and "Traceback" not in err


def test_resume_without_a_partial_run_and_refusing_to_overwrite(tiny_run_dir, tmp_path, capsys):
    make_image_tree(tmp_path / "d", per_class=4)
    assert _train(tmp_path / "d", tmp_path / "fresh", "--resume") == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert _train(tmp_path / "d", tiny_run_dir) == 2
    assert "--force" in capsys.readouterr().err


# ---------------------------------------------------------------- never destroy the user's data
def _tree_digest(root: Path) -> dict:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["the-data-itself", "inside-the-data", "containing-the-data", "a-folder-of-user-files", "a-file"])
def test_an_out_that_would_destroy_user_files_is_refused(tmp_path, capsys, where):
    data = make_image_tree(tmp_path / "work" / "d", per_class=4)
    mine = tmp_path / "work" / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    (tmp_path / "work" / "a.txt").write_text("a file")
    out = {"the-data-itself": data, "inside-the-data": data / "cats" / "run", "containing-the-data": tmp_path / "work",
           "a-folder-of-user-files": mine, "a-file": tmp_path / "work" / "a.txt"}[where]
    before = _tree_digest(tmp_path)
    assert _train(data, out) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "edgetune train: error:" in err.strip().splitlines()[-1], err
    assert _tree_digest(tmp_path) == before  # nothing deleted, nothing added
    assert not list(tmp_path.rglob("*.partial"))


def test_a_stale_partial_is_removed_only_when_edgetune_made_it(tmp_path, capsys):
    data = make_image_tree(tmp_path / "d", per_class=4)
    partial = tmp_path / "run.partial"
    partial.mkdir()
    (partial / "thesis.tex").write_text("not ours")
    assert _train(data, tmp_path / "run", "--fine-tune-epochs", "0") == 2
    assert (partial / "thesis.tex").read_text() == "not ours" and "did not create" in capsys.readouterr().err


def test_a_loss_that_becomes_nan_stops_training_and_writes_no_complete_run(tmp_path, capsys):
    data = make_image_tree(tmp_path / "d", per_class=8)
    # 1e38 is finite, but Adam's first step moves every weight by about that much: the logits overflow.
    assert _train(data, tmp_path / "run", "--learning-rate", "1e38", "--schedule", "constant") == 2
    err = capsys.readouterr().err
    assert "training diverged" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    assert not list((tmp_path / "run.partial").glob("metadata.json")) and not (tmp_path / "run.partial" / "metrics.json").exists()


# ---------------------------------------------------------------- preprocessing contract
@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_and_jpeg_decode_match_pillow(tmp_path, orientation):
    from PIL import ImageOps

    from edgetune.train.data import load_images

    rng = np.random.default_rng(orientation)
    arr = rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)
    arr[:8, :10] = 255  # asymmetric, so every orientation is distinguishable
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    img.save(path, quality=95, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"), np.float32)
    got = load_images([path], expected.shape[:2])[0]  # training decodes with the runtime's Pillow code
    assert got.shape == expected.shape
    # Same IDCT (INTEGER_ACCURATE == libjpeg ISLOW) and identity resize: bit-exact.
    assert np.abs(got - expected).max() == 0.0


@pytest.mark.slow
def test_short_real_recipe_on_shared_assets(shared_assets, tmp_path):
    """A short real recipe on a subset of cats-vs-dogs: the pretrained base must learn fast.

    200 training images give 7 steps per epoch: the short schedule uses a 10x learning rate.
    """
    import shutil

    from edgetune.train import train_run

    for split, n in (("train", 100), ("validation", 50)):
        for c in ("cats", "dogs"):
            files = sorted((CATS_DOGS / split / c).iterdir(), key=lambda p: int(p.stem.split(".")[1]))[:n]
            (tmp_path / "d" / split / c).mkdir(parents=True)
            for f in files:
                shutil.copy(f, tmp_path / "d" / split / c)
    run = train_run(tiny_train_config(tmp_path / "d", tmp_path / "run", image_size=160, batch_size=32, epochs=10,
                                      fine_tune_epochs=1, learning_rate=1e-3, weights=str(IMAGENET_NO_TOP)))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stage1"]["val"]["accuracy"] >= 0.85
    assert metrics["final"]["test"]["accuracy"] >= 0.85
