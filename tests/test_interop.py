"""Models other tools can load: probability outputs, metadata inside the file, the runtime without a sidecar.

The runtime parts use the committed fixture models (no TensorFlow); the export head and MediaPipe parts
build a tiny edgetune-shaped Keras model (seconds) and skip where TensorFlow or mediapipe is absent.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import synth_color_image

from edgetune import UserError
from edgetune.contract import read_metadata, write_metadata
from edgetune.runtime import Predictor

FIXTURES = Path(__file__).parent / "fixtures" / "models"
HAVE_MEDIAPIPE = importlib.util.find_spec("mediapipe") is not None
HAVE_TENSORFLOW = importlib.util.find_spec("tensorflow") is not None
needs_mediapipe = pytest.mark.skipif(not HAVE_MEDIAPIPE, reason="mediapipe (the [mediapipe] extra) is not installed")
needs_tensorflow = pytest.mark.skipif(not HAVE_TENSORFLOW, reason="the train extra (TensorFlow) is not installed")
RUNTIME_MODELS = ["tiny3_fp32.tflite", "tiny3_int8.tflite", "tiny3_uint8.tflite", "tiny2_fp32.tflite", "tiny3_fp32_onnx.onnx"]


def _images(n: int = 6, size: int = 32) -> np.ndarray:
    return np.stack([synth_color_image(i % 3, seed=i, size=size) for i in range(n)]).astype(np.float32)


def _embedded_copy(tmp_path: Path, name: str, standard: bool = False) -> Path:
    """A fixture model with its contract embedded (contract-only zip, or MediaPipe's standard metadata)."""
    from edgetune.convert import tflite_metadata
    from edgetune.convert.embed import contract_for_embedding, embed_metadata

    src = FIXTURES / name
    model = tmp_path / name
    shutil.copy(src, model)
    shutil.copy(src.with_suffix(".json"), model.with_suffix(".json"))
    meta = read_metadata(model)
    if model.suffix == ".onnx" or standard:
        embed_metadata(model, meta)
    else:
        model.write_bytes(tflite_metadata.embed_contract_only(model.read_bytes(), meta.labels, contract_for_embedding(meta)))
    return model


# ---------------------------------------------------------------- the runtime reads what is inside the file
@pytest.mark.parametrize("name", RUNTIME_MODELS)
def test_a_single_file_runs_without_its_sidecar(tmp_path, name):
    model = _embedded_copy(tmp_path, name)
    x = _images()
    with_json = Predictor.from_path(model).predict(x)
    model.with_suffix(".json").unlink()
    alone = Predictor.from_path(model)
    assert alone.labels == read_metadata(FIXTURES / name).labels
    np.testing.assert_array_equal(alone.predict(x), with_json)
    assert len(set(with_json.argmax(1))) > 1  # the fixture separates the images: the comparison means something


def test_edgetune_predict_runs_the_file_alone(tmp_path, capsys):
    from edgetune.cli import main
    from edgetune.runtime import load_and_preprocess

    model = _embedded_copy(tmp_path, "tiny3_int8.tflite")
    expected = Predictor.from_path(model)
    model.with_suffix(".json").unlink()
    from PIL import Image

    images = [tmp_path / f"img{i}.png" for i in range(3)]
    for i, p in enumerate(images):
        Image.fromarray(synth_color_image(i, seed=10 + i, size=32)).save(p)
    assert main(["predict", str(model), *map(str, images), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    want = expected.predict(np.stack([load_and_preprocess(p, (32, 32)) for p in images]))
    assert [row["top"][0]["label"] for row in doc["predictions"]] == [expected.labels[i] for i in want.argmax(1)]
    assert doc["output_kind"] == read_metadata(FIXTURES / "tiny3_int8.tflite").output_kind


def test_a_sidecar_that_contradicts_the_file_is_refused(tmp_path):
    model = _embedded_copy(tmp_path, "tiny3_fp32.tflite")
    meta = read_metadata(model)
    meta.labels = list(reversed(meta.labels))
    write_metadata(model.with_suffix(".json"), meta)
    with pytest.raises(UserError, match="contradicts the metadata inside the model"):
        Predictor.from_path(model)


def test_a_file_with_nothing_inside_still_asks_for_labels(tmp_path):
    model = tmp_path / "bare.tflite"
    shutil.copy(FIXTURES / "tiny3_fp32.tflite", model)
    with pytest.raises(UserError, match="--labels"):
        Predictor.from_path(model)


def test_the_single_file_path_stays_lean(tmp_path):
    """Reading embedded metadata needs neither TensorFlow, MediaPipe nor the onnx package (a Pi has none)."""
    tflite = _embedded_copy(tmp_path, "tiny3_int8.tflite")
    onnx = _embedded_copy(tmp_path, "tiny3_fp32_onnx.onnx")
    for p in (tflite, onnx):
        p.with_suffix(".json").unlink()
    code = ("import sys; from edgetune.runtime import Predictor\n"
            f"for p in {[str(tflite), str(onnx)]!r}: Predictor.from_path(p)\n"
            "heavy = [m for m in ('tensorflow', 'mediapipe', 'onnx', 'keras') if m in sys.modules]\n"
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_embedding_without_mediapipe_keeps_the_contract_and_says_why(tmp_path, monkeypatch):
    from edgetune.convert import tflite_metadata
    from edgetune.convert.embed import embed_metadata

    monkeypatch.setattr(tflite_metadata, "mediapipe_version", lambda: None)
    model = tmp_path / "m.tflite"
    shutil.copy(FIXTURES / "tiny3_fp32.tflite", model)
    meta = read_metadata(FIXTURES / "tiny3_fp32.tflite")
    with pytest.warns(UserWarning, match="mediapipe is not installed"):
        info = embed_metadata(model, meta)
    assert info["tflite_metadata"].startswith("skipped") and "[mediapipe]" in info["tflite_metadata"]
    from edgetune.runtime.embedded import read_embedded

    found = read_embedded(model)
    assert found.metadata().labels == meta.labels and found.normalization is None


def test_onnx_metadata_props(tmp_path):
    import onnxruntime as ort

    model = _embedded_copy(tmp_path, "tiny3_fp32_onnx.onnx")
    props = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    meta = read_metadata(FIXTURES / "tiny3_fp32_onnx.json")
    assert json.loads(props["labels"]) == meta.labels
    assert json.loads(props["edgetune.contract"])["preprocessing"]["input_range"] == [0.0, 255.0]
    assert "RGB" in props["edgetune.input"]


@needs_mediapipe
def test_standard_metadata_is_read_back_by_the_lean_reader(tmp_path):
    from edgetune.convert.tflite_metadata import metadata_json

    model = _embedded_copy(tmp_path, "tiny3_fp32.tflite", standard=True)
    shown = metadata_json(model)
    unit = shown["subgraph_metadata"][0]["input_tensor_metadata"][0]["process_units"][0]["options"]
    assert (unit["mean"], unit["std"]) == ([0.0], [1.0])  # 0..255 pixels go in as they are
    from edgetune.runtime.embedded import read_embedded

    found = read_embedded(model)
    assert found.normalization == ([0.0], [1.0]) and found.input_range() == (0.0, 255.0)
    assert found.labels == read_metadata(FIXTURES / "tiny3_fp32.tflite").labels
    model.with_suffix(".json").unlink()
    np.testing.assert_array_equal(Predictor.from_path(model).predict(_images()),
                                  Predictor.from_path(FIXTURES / "tiny3_fp32.tflite").predict(_images()))


# ---------------------------------------------------------------- exports end in probabilities
def _tiny_edgetune_model(units: int, size: int = 32):
    """A model with the layer names `deployment_model` reads, tiny enough to convert in seconds."""
    import keras
    from keras import layers

    from edgetune.train import model as m

    keras.utils.set_random_seed(units)
    inputs = keras.Input((size, size, 3))
    base_in = keras.Input((size, size, 3))
    y = layers.Conv2D(8, 3, strides=2, activation="relu")(base_in)
    base = keras.Model(base_in, layers.Conv2D(16, 3, strides=2, activation="relu")(y), name=m.BASE)
    x = layers.Rescaling(1 / 127.5, offset=-1, name=m.PREPROCESS)(inputs)
    x = layers.GlobalAveragePooling2D(name=m.POOLING)(base(x))
    logits = layers.Dense(units, name=m.LOGITS, kernel_initializer=keras.initializers.RandomNormal(stddev=2.0))
    model = keras.Model(inputs, logits(x))
    kernel, bias = logits.get_weights()  # centre the logits on the test images: top-1 varies across them
    logits.set_weights([kernel, bias - np.median(np.asarray(m.deployment_model(model)(_images(12, size))), axis=0)])
    return model


@needs_tensorflow
@pytest.mark.parametrize("units,kind", [(1, "binary_logit"), (3, "softmax_logits")])
def test_the_export_graph_is_the_keras_probabilities(tmp_path, units, kind):
    from edgetune.convert.tflite import convert_saved_model
    from edgetune.runtime import open_backend, probabilities
    from edgetune.train.model import deployment_model, export_model

    model = _tiny_edgetune_model(units)
    x = _images(12)
    want = probabilities(np.asarray(deployment_model(model)(x)), kind)
    got = np.asarray(export_model(model)(x))
    assert got.shape == (12, max(2, units)) and len(set(want.argmax(1))) > 1
    np.testing.assert_allclose(got, want, atol=1e-6)
    export_model(model).export(str(tmp_path / "sm"), verbose=False)
    (tmp_path / "m.tflite").write_bytes(convert_saved_model(tmp_path / "sm", "fp32"))
    backend = open_backend(tmp_path / "m.tflite", threads=1)
    assert list(backend.outputs[0].shape)[-1] == max(2, units)
    tflite = np.concatenate([backend.invoke(x[i:i + 1].astype(np.float32)) for i in range(len(x))])
    np.testing.assert_allclose(tflite, want, atol=2e-6)


@needs_tensorflow
def test_convert_uses_the_runs_saved_model_only_when_it_gives_probabilities(tmp_path, capsys):
    from edgetune.convert.inputs import export_saved_model
    from edgetune.runtime import probabilities
    from edgetune.train.model import deployment_model, export_model

    model = _tiny_edgetune_model(1)
    x = _images(8)
    expected = probabilities(np.asarray(deployment_model(model)(x)), "binary_logit")
    run = tmp_path / "run"
    export_model(model).export(str(run / "saved_model"), verbose=False)
    assert export_saved_model(run, model, tmp_path / "a", x, expected) == run / "saved_model"
    shutil.rmtree(run / "saved_model")
    deployment_model(model).export(str(run / "saved_model"), verbose=False)  # an older edgetune's logits
    (tmp_path / "b").mkdir()
    used = export_saved_model(run, model, tmp_path / "b", x, expected)
    assert used == tmp_path / "b" / "saved_model" and "an older run's logits" in capsys.readouterr().err


@needs_tensorflow
@needs_mediapipe
@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_mediapipe_image_classifier_agrees_with_edgetune(tmp_path, kind):
    """MediaPipe Tasks loads the export as it is (labels, normalization from the metadata) and picks the same top-1."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from edgetune.contract import ModelMetadata, Preprocessing, TensorSpec
    from edgetune.convert.embed import embed_metadata
    from edgetune.convert.tflite import convert_saved_model
    from edgetune.train.model import export_model

    model = _tiny_edgetune_model(3)
    export_model(model).export(str(tmp_path / "sm"), verbose=False)
    x = _images(12)
    path = tmp_path / f"{kind}.tflite"
    path.write_bytes(convert_saved_model(tmp_path / "sm", kind, x if kind == "int8" else None))
    meta = ModelMetadata(labels=["red", "green", "blue"], preprocessing=Preprocessing(size=(32, 32)),
                         input=TensorSpec([1, 32, 32, 3], "float32"), output=TensorSpec([1, 3], "float32"),
                         output_kind="probabilities", preset=f"tflite_{kind}")
    info = embed_metadata(path, meta)
    assert info["tflite_metadata"].startswith("written")
    ours = Predictor.from_path(path)  # no sidecar: the embedded contract
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for img in x.astype(np.uint8):
            top = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(img)))
            probs = ours.predict(img[None].astype(np.float32))[0]
            assert top.classifications[0].categories[0].category_name == ours.labels[int(probs.argmax())]
            assert top.classifications[0].categories[0].score == pytest.approx(float(probs.max()), abs=1e-5)
