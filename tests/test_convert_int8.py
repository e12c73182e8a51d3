"""The int8 sources and searches behind the int8 presets: accuracy control, activation ranges, GPTQ and bias
correction, the folded preprocessing (on the `converted` run of conftest, shared with test_convert.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_input


# ---------------------------------------------------------------- accuracy control, activation ranges
def test_accuracy_control_keeps_layers_float_when_the_budget_demands_it(converted):
    """A budget plain int8 cannot meet (outputs within 1e-4 of float) forces layers back to float, worst first."""
    from ai_edge_litert.interpreter import Interpreter

    from edgetune.contract import read_split
    from edgetune.convert.accuracy_control import SelectiveQuantizer, Targets, ranked, search
    from edgetune.convert.tflite import convert_saved_model

    run, _ = converted
    x = np.stack([tiny_input(p) for p, _ in read_split(run, "train")[:16]])

    def outputs(model: bytes) -> np.ndarray:
        it = Interpreter(model_content=model)
        it.allocate_tensors()
        i, o = it.get_input_details()[0], it.get_output_details()[0]
        res = []
        for img in x:
            it.set_tensor(i["index"], img[None])
            it.invoke()
            res.append(it.get_tensor(o["index"]).copy())
        return np.concatenate(res)

    reference = outputs(convert_saved_model(run / "saved_model", "fp32"))
    q = SelectiveQuantizer(run / "saved_model", x)
    ranking = ranked(q.layer_errors())
    assert len(ranking) > 10 and ranking[0].rmse_per_scale >= ranking[-1].rmse_per_scale
    plain_error = float(np.abs(outputs(q.model()) - reference).max())
    assert plain_error > 0

    def judge(model):  # "agreement" 1 only when the worst output error halves
        return (1.0 if np.abs(outputs(model) - reference).max() <= plain_error / 2 else 0.0), 0.0

    model, float_layers, trials = search(q, ranking, judge, Targets(1.0, 0.5, len(ranking)))
    assert trials[0].float_layers == 0 and not trials[0].met
    assert len(float_layers) >= 1 and float_layers == [e.tensor for e in ranking[:len(float_layers)]]
    kept = Interpreter(model_content=model)
    float_outputs = {d["name"] for d in kept.get_tensor_details() if d["dtype"] == np.float32}
    assert set(float_layers) <= float_outputs  # the chosen ops really compute in float


def test_percentile_ranges_clip_the_extremes_and_keep_fixed_ranges(converted):
    """Every moved activation range lies inside its min/max one; the input and softmax keep theirs; the
    model still quantizes and runs; the 100th percentile is each tensor's own min/max, wider than the 99th."""
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.tools import flatbuffer_utils as fb

    from edgetune.contract import read_split
    from edgetune.convert.accuracy_control import SelectiveQuantizer
    from edgetune.convert.activation_ranges import percentile_ranges

    run, _ = converted
    x = np.stack([tiny_input(p) for p, _ in read_split(run, "train")[:16]])
    q = SelectiveQuantizer(run / "saved_model", x)
    minmax = q.calibrated

    def ranges(model: bytes) -> dict[int, tuple[float, float]]:
        m = fb.convert_bytearray_to_object(model)
        return {k: (float(t.quantization.min[0]), float(t.quantization.max[0])) for k, t in enumerate(m.subgraphs[0].tensors)
                if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min) == 1}

    clipped, summary = percentile_ranges(minmax, x, 99.0)
    before, after = ranges(minmax), ranges(clipped)
    assert before.keys() == after.keys() and summary.tensors > 10 and summary.median_width_ratio < 1.0
    # A moved range lies inside the min/max one widened to hold zero (as the quantizer widens it anyway).
    assert all(min(before[k][0], 0.0) <= lo <= 0.0 <= hi <= max(before[k][1], 0.0)
               for k, (lo, hi) in after.items() if (lo, hi) != before[k])
    assert sum(after[k] != before[k] for k in before) == summary.tensors
    m = fb.convert_bytearray_to_object(minmax)
    sg = m.subgraphs[0]
    fixed = {int(i) for i in sg.inputs} | {int(o) for op in sg.operators for o in op.outputs
                                           if fb.opcode_to_name(m, op.opcodeIndex) == "SOFTMAX"}
    assert fixed and all(after[k] == before[k] for k in fixed if k in before)
    # p = 100: each tensor's own min/max (the converter widens some, e.g. a residual branch to its ADD's range).
    own, summary100 = percentile_ranges(minmax, x, 100.0)
    r100 = ranges(own)
    assert summary100.tensors < summary.tensors
    assert all(min(before[k][0], 0.0) <= lo <= 0.0 <= hi <= max(before[k][1], 0.0) and lo <= after[k][0] and hi >= after[k][1]
               for k, (lo, hi) in r100.items() if (lo, hi) != before[k])

    plain = q.model()
    q.use_calibration(clipped)
    moved = q.model()
    assert moved != plain
    it = Interpreter(model_content=moved)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x[:1])
    it.invoke()
    assert np.isfinite(it.get_tensor(it.get_output_details()[0]["index"])).all()
    with pytest.raises(ValueError):
        percentile_ranges(minmax, x, 40.0)


# ---------------------------------------------------------------- weight rounding, bias correction, folded input
def test_gptq_rounding_keeps_the_grid_and_scales_and_lowers_the_output_error():
    """GPTQ's 1x1 kernel: the converter's per-channel grid and scales, less output error than nearest rounding."""
    from edgetune.convert.bias_correction import gptq_round, round_per_channel

    rng = np.random.default_rng(3)
    x = np.maximum(rng.normal(size=(4000, 64)) @ rng.normal(size=(64, 64)) * 0.3 + 0.4, 0)  # correlated, ReLU-like
    x[:, 5] = 0  # an input channel that is always zero
    kernel = rng.normal(size=(64, 16)) * 0.05
    gram = x.T @ x
    q = gptq_round(kernel, gram)
    assert np.array_equal(round_per_channel(q, 1), q) or np.allclose(round_per_channel(q, 1), q, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.abs(q).max(0), np.abs(kernel).max(0), rtol=1e-12)  # so the converter's scale holds
    steps = q / (np.abs(kernel).max(0) / 127)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-9)
    nearest = round_per_channel(kernel, 1)
    err = lambda w: np.linalg.norm(x @ (w - kernel))  # noqa: E731
    assert err(q) < 0.9 * err(nearest), (err(q), err(nearest))
    assert np.array_equal(gptq_round(nearest, gram), nearest)  # weights already on the grid stay where they are


def test_bias_correction_puts_weights_on_the_int8_grid_and_removes_the_mean_shift(converted, tmp_path):
    """Weights on the converter's per-channel grid (so it changes nothing), biases that cancel the rounding's mean shift."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from edgetune.contract import read_split
    from edgetune.convert.bias_correction import conv_bn_pairs, correct_biases, round_per_channel
    from edgetune.convert.tflite import convert_saved_model
    from edgetune.train.model import BASE, PREPROCESS, export_model, load_model

    run, rows = converted
    assert rows["tflite_int8"].parity and "bias_correction" in json.loads(
        (run / "export" / "tflite_int8.json").read_text())["quantization"]
    x = np.stack([tiny_input(p) for p, _ in read_split(run, "train")[:16]])
    models = reference, rounded_only, corrected = [load_model(run / "model.keras") for _ in range(3)]
    # Keras's ImageNet MobileNetV2 weights already lie on the int8 grid once BatchNorm is folded (only fine-tuned
    # layers are off it), and this fixture is not fine-tuned: move the stem's kernel off the grid, alike in all three.
    # The last 1x1 convolution is nudged too: off the grid, it is rounded with GPTQ.
    for name in ("Conv1", "Conv_1"):
        kernel = np.asarray(reference.get_layer(BASE).get_layer(name).kernel)
        nudged = kernel * np.random.default_rng(0).uniform(0.97, 1.03, kernel.shape).astype(np.float32)
        for model in models:
            model.get_layer(BASE).get_layer(name).kernel.assign(nudged)
    summary = correct_biases(corrected, x)
    assert summary.layers >= 50 and summary.max_shift > 0  # every conv + BatchNorm of MobileNetV2
    assert summary.rounding == "gptq" and summary.gptq_layers == 1 and summary.gptq_error_ratio < 1
    for conv, bn in conv_bn_pairs(rounded_only.get_layer(BASE)):  # the same rounding, biases left as they were
        depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
        f = (np.asarray(bn.gamma) / np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon)).reshape((1, 1, -1, 1) if depthwise else (1, 1, 1, -1))
        conv.kernel.assign(round_per_channel(np.asarray(conv.kernel) * f, 2 if depthwise else 3) / f)

    def stem_mean(model):  # per-channel mean of the first BatchNorm's output: its input has no upstream rounding
        base = model.get_layer(BASE)
        probe = keras.Model(base.inputs, base.get_layer("bn_Conv1").output)
        return np.asarray(probe(model.get_layer(PREPROCESS)(x))).mean(axis=(0, 1, 2))

    shift_rounded = np.abs(stem_mean(rounded_only) - stem_mean(reference)).max()
    shift_corrected = np.abs(stem_mean(corrected) - stem_mean(reference)).max()
    assert shift_rounded > 0 and shift_corrected < 0.25 * shift_rounded

    export_model(corrected).export(str(tmp_path / "sm"), verbose=False)
    interpreter = Interpreter(model_content=convert_saved_model(tmp_path / "sm", "int8", x))
    conv, bn = conv_bn_pairs(corrected.get_layer(BASE))[0]
    folded = np.asarray(conv.kernel) * (np.asarray(bn.gamma) / np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon))
    expected = np.transpose(folded, (3, 0, 1, 2))  # TFLite keeps conv weights as (out, h, w, in)
    found = [d for d in interpreter.get_tensor_details() if d["dtype"] == np.int8 and tuple(d["shape"]) == expected.shape]
    assert found, "the stem convolution's int8 weights are in the model"
    q = interpreter.get_tensor(found[0]["index"]).astype(np.float64)
    scales = found[0]["quantization_parameters"]["scales"].reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(q * scales, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_folded_preprocessing_is_the_same_model_and_spares_the_input_a_requantization(converted, tmp_path):
    """The export graph with x / 127.5 - 1 folded into Conv1: the same model (but for half a pixel value on the padded
    border); its int8 model feeds exact pixel values into the first convolution, whose output then stays closer to
    float than with the preprocessing as int8 ops."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from edgetune.contract import read_split
    from edgetune.convert.input_fold import FOLDED, fold_preprocessing
    from edgetune.convert.tflite import convert_saved_model
    from edgetune.train.model import BASE, PREPROCESS, export_model, load_model

    run, rows = converted
    assert json.loads((run / "export" / "tflite_int8.json").read_text())["quantization"]["input"] == FOLDED
    model = load_model(run / "model.keras")
    before = [np.asarray(w).copy() for w in model.weights]
    x = np.stack([tiny_input(p) for p, _ in read_split(run, "train")[:16]])
    reference, folded = export_model(model), fold_preprocessing(model)
    assert [layer.name for layer in folded.layers][1:3] == ["subtract_center", "Conv1_raw_pixels"]
    assert np.asarray(reference(x)).std(axis=0).max() > 1e-3  # the fixture's outputs depend on the image
    np.testing.assert_allclose(np.asarray(folded(x)), np.asarray(reference(x)), rtol=0, atol=1e-2)
    assert all(np.array_equal(np.asarray(w), b) for w, b in zip(model.weights, before))  # the model is untouched

    base = model.get_layer(BASE)
    float_conv = np.asarray(base.get_layer("Conv1")(model.get_layer(PREPROCESS)(x)))
    folded_conv = np.asarray(folded.layers[2](folded.layers[1](x)))
    # "same" padding of an even size pads after: all but the last row and column see no padding and are exact.
    np.testing.assert_allclose(folded_conv[:, :-1, :-1], float_conv[:, :-1, :-1], rtol=0,
                               atol=1e-5 * np.abs(float_conv).max())
    border = np.abs(folded_conv - float_conv).max()
    assert 0 < border <= 0.5 / 127.5 * np.abs(np.asarray(base.get_layer("Conv1").kernel)).sum((0, 1, 2)).max() + 1e-5

    stem = keras.Model(base.inputs, base.get_layer("Conv1_relu").output)
    float_stem = np.asarray(stem(model.get_layer(PREPROCESS)(x)))

    x[0, 0, 0], x[0, 0, 1] = 0.0, 255.0  # calibration spans the pixel range, as 200 photos do (generated ones need not)

    def first_conv(graph, name: str, to_preprocessed) -> tuple[list[str], tuple, float, float]:
        """The int8 model's ops up to its first convolution, that convolution's input quantization, and the rms
        errors of its input (in preprocessed units) and of its output against float."""
        graph.export(str(tmp_path / name), verbose=False)
        it = Interpreter(model_content=convert_saved_model(tmp_path / name, "int8", x), experimental_preserve_all_tensors=True)
        it.allocate_tensors()
        ops, tensors = it._get_ops_details(), it.get_tensor_details()
        conv = next(op for op in ops if op["op_name"] == "CONV_2D")
        ins, out = tensors[conv["inputs"][0]], tensors[conv["outputs"][0]]
        input_errors, output_errors = [], []
        for img, want in zip(x, float_stem):
            it.set_tensor(it.get_input_details()[0]["index"], img[None])
            it.invoke()
            (si, zi), (so, zo) = ins["quantization"], out["quantization"]
            got_in = to_preprocessed((it.get_tensor(ins["index"])[0].astype(np.float64) - zi) * si)
            input_errors.append(np.mean((got_in - (img / 127.5 - 1.0)) ** 2))
            output_errors.append(np.mean(((it.get_tensor(out["index"])[0].astype(np.float64) - zo) * so - want) ** 2))
        return ([op["op_name"] for op in ops[:conv["index"] + 1]], ins["quantization"],
                float(np.sqrt(np.mean(input_errors))), float(np.sqrt(np.mean(output_errors))))

    plain_ops, _, plain_in, plain_out = first_conv(reference, "plain", lambda v: v)
    folded_ops, conv_input, folded_in, folded_out = first_conv(folded, "folded", lambda v: (v + 128.0) / 127.5 - 1.0)
    assert plain_ops == ["QUANTIZE", "MUL", "ADD", "CONV_2D"]
    assert folded_ops == ["QUANTIZE", "ADD", "CONV_2D"]
    assert conv_input == (1.0, 0)  # whole pixel values minus 128, exactly
    # Folded, only the rounding of the resized image's fractions to whole pixels is left (at most half a pixel value).
    assert folded_in <= 0.5 / 127.5 + 1e-7 and folded_in < 0.7 * plain_in, (folded_in, plain_in)
    assert folded_out < plain_out, (folded_out, plain_out)


def test_fold_refuses_a_graph_it_does_not_know():
    import keras

    from edgetune.convert.input_fold import fold_preprocessing

    inputs = keras.Input((8, 8, 3))
    odd = keras.Model(inputs, keras.layers.Dense(2, name="logits")(inputs))
    with pytest.raises(ValueError):
        fold_preprocessing(odd)
