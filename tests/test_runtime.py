"""edgetune.runtime: Predictor over the committed fixture models, quantization, output kinds, bad input, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetune import UserError
from edgetune.cli import main as cli_main
from edgetune.contract import ContractError, read_metadata
from edgetune.runtime import ImageError, Predictor, find_images, load_and_preprocess, load_image, parse_input_range

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MODELS = FIXTURES / "models"
IMAGES = sorted(find_images([FIXTURES / "images"]))
REFERENCE = json.loads((FIXTURES / "reference_x86_64.json").read_text())
TINY3 = ["tiny3_fp32.tflite", "tiny3_int8.tflite", "tiny3_uint8.tflite", "tiny3_fp32_onnx.onnx"]
ALL_MODELS = TINY3 + ["tiny2_fp32.tflite"]
# Images are generated with their blob in colour channel i % 3: that is their class.
EXPECTED3 = [["red", "green", "blue"][i % 3] for i in range(len(IMAGES))]


def batch(size=(32, 32)) -> np.ndarray:
    return np.stack([load_and_preprocess(p, size) for p in IMAGES])


@pytest.mark.parametrize("name", ALL_MODELS)
def test_fixture_outputs_match_golden_reference(name):
    """Probabilities and raw outputs equal the committed x86-64 reference (regenerate: make_fixtures.py)."""
    p = Predictor.from_path(MODELS / name, threads=1)
    ref = REFERENCE["models"][name]
    probs = p.predict_files(IMAGES)
    assert probs.shape == (len(IMAGES), len(p.labels))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    for img, row in zip(IMAGES, probs):
        r = ref["images"][Path(img).name]
        if ref["quantized"]:
            # Integer kernels may round differently across CPUs: one or two quantization steps.
            raw = p.invoke_raw(p.quantize(load_and_preprocess(img, p.size)[None])).reshape(-1)
            assert np.abs(raw.astype(int) - np.array(r["raw"])).max() <= 2
            assert np.argmax(row) == np.argmax(r["probs"])
        else:
            np.testing.assert_allclose(row, r["probs"], atol=1e-4)
    # A model whose outputs do not depend on the input would pass the checks above trivially.
    assert np.ptp(probs[:, 0]) > 0.5


@pytest.mark.parametrize("name", TINY3)
def test_tiny3_classifies_the_blob_colour(name):
    p = Predictor.from_path(MODELS / name)
    top1 = [p.labels[i] for i in p.predict_files(IMAGES).argmax(axis=1)]
    assert top1 == EXPECTED3


def test_quantized_models_agree_with_float():
    x = batch()
    fp32 = Predictor.from_path(MODELS / "tiny3_fp32.tflite").predict(x)
    onnx = Predictor.from_path(MODELS / "tiny3_fp32_onnx.onnx").predict(x)
    np.testing.assert_allclose(onnx, fp32, atol=1e-5)
    for name in ("tiny3_int8.tflite", "tiny3_uint8.tflite"):
        q = Predictor.from_path(MODELS / name).predict(x)
        assert np.abs(q - fp32).max() < 0.02, name


@pytest.mark.parametrize("name", ["tiny3_int8.tflite", "tiny3_uint8.tflite"])
def test_quantization_uses_the_interpreters_parameters(name):
    p = Predictor.from_path(MODELS / name)
    d = p.input_details
    assert d.dtype == np.dtype(name.split("_")[1].split(".")[0]) and d.quantized
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    info = np.iinfo(d.dtype)
    # TFLite's Quantize op: round(x / scale) half away from zero, plus the zero point, clipped.
    expected = np.clip(tflite_round(x / d.scale) + d.zero_point, info.min, info.max).astype(d.dtype)
    q = p.quantize(x)
    assert q.dtype == d.dtype
    np.testing.assert_array_equal(q, expected)
    ties = np.full((1, 32, 32, 3), 100.5, np.float32)  # upscaling by 2 makes exact .5 pixels
    assert p.quantize(ties).flat[0] == 101 + d.zero_point
    # The output is dequantized with the output's own scale and zero point, then soft-maxed.
    raw = p.invoke_raw(q)
    o = p.output_details
    z = (raw.astype(np.float32) - o.zero_point) * o.scale
    e = np.exp(z - z.max())
    np.testing.assert_allclose(p.predict(x), e / e.sum(), rtol=1e-5)


def tflite_round(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def test_negative_input_range_quantizes_to_nearest(tmp_path):
    model = no_metadata_copy(tmp_path, "tiny3_int8.tflite")
    p = Predictor.from_path(model, labels=["r", "g", "b"], input_range="-1,1")
    d = p.input_details
    x = np.random.default_rng(2).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    real = x.astype(np.float64) / 127.5 - 1.0
    exact = real / d.scale + d.zero_point
    q = p.quantize(x).astype(np.float64)
    assert q.min() >= -128 and q.max() <= 127
    # Nearest integer (ties may go either way: float32 arithmetic), clipped to int8.
    assert np.abs(q - np.clip(exact, -128, 127)).max() <= 0.5 + 1e-3
    assert p.metadata.preprocessing.input_range == (-1.0, 1.0)


def test_metadata_agrees_with_interpreter_details():
    for name in ALL_MODELS:
        p = Predictor.from_path(MODELS / name)
        meta = read_metadata(MODELS / name)
        assert meta.input.dtype == str(p.input_details.dtype)
        assert meta.input.scale == p.input_details.scale
        assert meta.output.zero_point == p.output_details.zero_point


def test_binary_logit_gives_two_columns():
    p = Predictor.from_path(MODELS / "tiny2_fp32.tflite")
    assert p.metadata.output_kind == "binary_logit" and p.output_details.shape[-1] == 1
    x = batch()
    probs = p.predict(x)
    logits = np.concatenate([p.invoke_raw(p.quantize(x[i:i + 1])) for i in range(len(x))])[:, 0]
    np.testing.assert_allclose(probs[:, 1], 1 / (1 + np.exp(-logits)), rtol=1e-5)
    assert [p.labels[i] for i in probs.argmax(1)] == ["cat" if c == "red" else "dog" for c in EXPECTED3]


def test_batch_equals_single_images_and_accepts_hwc():
    p = Predictor.from_path(MODELS / "tiny3_int8.tflite")
    x = batch()
    together = p.predict(x)
    one_by_one = np.concatenate([p.predict(img) for img in x])  # (H, W, 3) is one image
    np.testing.assert_array_equal(together, one_by_one)
    with pytest.raises(ValueError, match="expects"):
        p.predict(np.zeros((1, 16, 16, 3), np.float32))


def test_a_dynamic_onnx_batch_runs_in_bounded_chunks():
    """ONNX Runtime plans activations for the whole batch: 1,000 images in one call took bench past 20 GB."""
    from edgetune.runtime._backends import ONNX_MAX_BATCH

    p = Predictor.from_path(MODELS / "tiny3_fp32_onnx.onnx")
    assert p.backend.inputs[0].shape[0] == -1  # the fixture's batch is dynamic
    sizes, invoke = [], p.backend.invoke
    p.backend.invoke = lambda x: sizes.append(len(x)) or invoke(x)
    x = np.concatenate([batch()] * (2 * ONNX_MAX_BATCH // len(batch()) + 1))
    got = p.predict(x)
    assert max(sizes) == ONNX_MAX_BATCH and sum(sizes) == len(x) > 2 * ONNX_MAX_BATCH
    np.testing.assert_allclose(got, np.concatenate([p.predict(img) for img in x[:5]] + [got[5:]]), atol=1e-6)


def test_backend_info_names_what_runs():
    lite = Predictor.from_path(MODELS / "tiny3_fp32.tflite", threads=2).backend_info()
    assert lite["backend"] == "litert" and lite["delegate"] == "XNNPACK" and lite["threads"] == 2
    assert lite["package"] in ("ai-edge-litert", "tflite-runtime") and lite["version"] != "unknown"
    ort = Predictor.from_path(MODELS / "tiny3_fp32_onnx.onnx").backend_info()
    assert ort["backend"] == "onnxruntime" and ort["provider"] == "CPUExecutionProvider"


def test_without_xnnpack_same_outputs():
    from edgetune.runtime._backends import LiteRTBackend
    from edgetune.runtime.predictor import Predictor as P

    path = MODELS / "tiny3_fp32.tflite"
    plain = P(LiteRTBackend(path, xnnpack=False), read_metadata(path), path)
    assert plain.backend_info()["delegate"] == "none"
    np.testing.assert_allclose(plain.predict(batch()), Predictor.from_path(path).predict(batch()), atol=1e-5)


# ---------------------------------------------------------------- models without metadata
def no_metadata_copy(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copy(MODELS / name, dst)
    return dst


def test_model_without_metadata_needs_labels(tmp_path):
    model = no_metadata_copy(tmp_path, "tiny3_uint8.tflite")
    with pytest.raises(UserError, match="no metadata file.*--labels"):
        Predictor.from_path(model)
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n\n")
    p = Predictor.from_path(model, labels=labels)
    # uint8 input without metadata: pixels go in raw; this model's input has scale 1, zero point 0,
    # so raw is exactly its 0..255 contract and outputs equal the metadata-driven predictor's.
    assert p.size == (32, 32) and p.metadata.output_kind == "softmax_logits"
    np.testing.assert_array_equal(p.predict(batch()), Predictor.from_path(MODELS / "tiny3_uint8.tflite").predict(batch()))
    with pytest.raises(UserError, match="3 labels do not match the model's 3 outputs|labels do not match"):
        Predictor.from_path(model, labels=["a", "b"])
    with pytest.raises(UserError, match="input size 40x40 does not match"):
        Predictor.from_path(model, labels=labels, size=40)


def test_input_range_changes_what_the_model_sees(tmp_path):
    model = no_metadata_copy(tmp_path, "tiny3_fp32.tflite")
    labels = ["red", "green", "blue"]
    default = Predictor.from_path(model, labels=labels)  # float input without metadata: 0..255
    assert default.metadata.preprocessing.input_range == (0.0, 255.0)
    unit = Predictor.from_path(model, labels=labels, input_range="0,1")
    x = batch()
    np.testing.assert_allclose(unit.quantize(x[:1]), x[:1] / 255.0, rtol=1e-6)
    assert not np.allclose(unit.predict(x), default.predict(x), atol=1e-3)
    with pytest.raises(UserError, match="raw is for integer"):
        Predictor.from_path(model, labels=labels, input_range="raw")
    assert parse_input_range("-1,1") == (-1.0, 1.0) and parse_input_range("raw") == "raw"
    with pytest.raises(UserError):
        parse_input_range("0-255")


def test_metadata_from_another_export_is_refused(tmp_path):
    model = no_metadata_copy(tmp_path, "tiny3_fp32.tflite")
    shutil.copy(MODELS / "tiny3_int8.json", model.with_suffix(".json"))
    with pytest.raises(UserError, match="int8 input but tiny3_fp32.tflite takes float32"):
        Predictor.from_path(model)


def test_size_must_agree_with_metadata():
    with pytest.raises(UserError, match="contradicts"):
        Predictor.from_path(MODELS / "tiny3_fp32.tflite", size=64)


# ---------------------------------------------------------------- bad models
def test_bad_model_files_give_one_clear_error(tmp_path):
    truncated = tmp_path / "tiny3_fp32.tflite"
    truncated.write_bytes((MODELS / "tiny3_fp32.tflite").read_bytes()[:3000])
    foreign = tmp_path / "photo.tflite"
    shutil.copy(IMAGES[0], foreign)
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes((MODELS / "tiny3_fp32_onnx.onnx").read_bytes()[:2000])
    for path, pattern in [(truncated, "not a loadable TFLite model"), (foreign, "not a loadable TFLite model"),
                          (bad_onnx, "not a loadable ONNX model"), (tmp_path / "missing.tflite", "does not exist"),
                          (tmp_path / "model.pt", "unknown model type")]:
        with pytest.raises(UserError, match=pattern):
            Predictor.from_path(path, labels=["a", "b", "c"])


def test_invalid_metadata_is_a_contract_error(tmp_path):
    model = no_metadata_copy(tmp_path, "tiny3_fp32.tflite")
    model.with_suffix(".json").write_text('{"schema": 1, "labels": ["only_one"]}')
    with pytest.raises(ContractError, match="labels"):
        Predictor.from_path(model)


def test_device_gpu_is_explicit():
    with pytest.raises(UserError, match="run on the CPU"):
        Predictor.from_path(MODELS / "tiny3_fp32.tflite", device="gpu")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(UserError, match="CUDAExecutionProvider"):
            Predictor.from_path(MODELS / "tiny3_fp32_onnx.onnx", device="gpu")
        return
    p = Predictor.from_path(MODELS / "tiny3_fp32_onnx.onnx", device="gpu")
    assert p.backend_info()["provider"] == "CUDAExecutionProvider"
    cpu = Predictor.from_path(MODELS / "tiny3_fp32_onnx.onnx")
    np.testing.assert_allclose(p.predict(batch()), cpu.predict(batch()), atol=1e-3)


# ---------------------------------------------------------------- images
def test_image_formats_modes_and_exif(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (10, 14, 3), dtype=np.uint8)
    for mode in ("L", "RGBA", "P", "CMYK"):
        img = Image.fromarray(rgb).convert(mode)
        path = tmp_path / f"x_{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
        img.save(path)
        out = load_image(path)
        assert out.shape == (10, 14, 3) and out.dtype == np.uint8
    # EXIF orientation 6 (rotate 90 clockwise): a 10x14 image is 14x10 after transposing.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    assert load_image(tmp_path / "rot.jpg").shape == (14, 10, 3)
    assert load_image(tmp_path / "rot.jpg", exif_orientation=False).shape == (10, 14, 3)
    # Animated GIF: the first frame, as tf.io.decode_image(expand_animations=False).
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert load_image(tmp_path / "anim.gif").mean() < 50


def test_bad_images_raise_image_error(tmp_path):
    truncated = tmp_path / "t.jpg"
    truncated.write_bytes(Path(IMAGES[0]).read_bytes()[:400])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    for path in (truncated, text, tmp_path / "missing.jpg"):
        with pytest.raises(ImageError, match=path.name):
            load_image(path)


# ---------------------------------------------------------------- CLI
def test_cli_predict_text_and_json(tmp_path, capsys):
    assert cli_main(["predict", str(MODELS / "tiny3_int8.tflite"), str(FIXTURES / "images"), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(IMAGES)
    assert [line.split(": ", 1)[1].split(" (")[0] for line in lines] == EXPECTED3
    assert all(line.count("(") == 2 for line in lines)
    assert cli_main(["predict", str(MODELS / "tiny3_fp32_onnx.onnx"), *IMAGES[:2], "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["backend"]["backend"] == "onnxruntime" and doc["errors"] == []
    assert [r["top"][0]["label"] for r in doc["predictions"]] == EXPECTED3[:2]


def test_cli_bad_image_continues_and_fails_at_the_end(tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rc = cli_main(["predict", str(MODELS / "tiny3_fp32.tflite"), IMAGES[0], str(bad), IMAGES[1]])
    out, err = capsys.readouterr()
    assert rc == 1
    assert len(out.strip().splitlines()) == 2  # both good images still classified
    assert "broken.jpg" in err and "1 of 3 images failed" in err


def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys):
    model = no_metadata_copy(tmp_path, "tiny3_fp32.tflite")
    assert cli_main(["predict", str(model), IMAGES[0]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgetune predict: error:") and "--labels" in err and len(err.splitlines()) == 1
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\nd\n")
    assert cli_main(["predict", str(model), IMAGES[0], "--labels", str(labels)]) == 2
    assert "4 labels do not match the model's 3 outputs" in capsys.readouterr().err
    assert cli_main(["predict", str(MODELS / "tiny3_fp32.tflite"), str(tmp_path / "empty_dir_missing")]) == 1
    (tmp_path / "empty").mkdir()
    assert cli_main(["predict", str(MODELS / "tiny3_fp32.tflite"), str(tmp_path / "empty")]) == 2
    assert "no images found" in capsys.readouterr().err


# ---------------------------------------------------------------- real third-party models
@pytest.mark.slow
@pytest.mark.parametrize("model", ["tf2_mobilenet_v2_1.0_224_ptq.tflite", "mobilenet_v2_1.0_224_quant.tflite"])
def test_imagenet_models_name_the_cat_and_the_uniform(shared_assets, model, capsys):
    src = shared_assets / "mobilenet_v2" / "source"
    argv = ["predict", str(src / model), str(src / "cat.bmp"), str(src / "grace_hopper.bmp"),
            "--labels", str(src / "imagenet_labels.txt"), "--size", "224", "--json"]
    assert cli_main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    top = [r["top"][0]["label"] for r in doc["predictions"]]
    assert top == ["Egyptian cat", "military uniform"]
    assert doc["output_kind"] == "probabilities" and doc["labels"] == 1001
