"""convert's gate plumbing on constructed data: flips sheet, summary and exit code, calibration sampling,
the accuracy-controlled search (and its activation-range step), and what `done_presets` trusts. Fast: no TensorFlow model is trained here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgetune.convert._cli import exit_code
from edgetune.convert.exporter import ExportRow
from edgetune.convert.flips import flipped, write_flips_sheet
from edgetune.convert.inputs import sample
from edgetune.convert.report import done_presets, problems, summary_table


def _probs(top: list[int], p: float = 0.8, classes: int = 3) -> np.ndarray:
    out = np.full((len(top), classes), (1 - p) / (classes - 1), np.float32)
    out[np.arange(len(top)), top] = p
    return out


# ---------------------------------------------------------------- flips
def test_flipped_lists_changed_images_largest_change_first():
    keras = _probs([0, 1, 2, 0])
    export = _probs([0, 2, 2, 1])
    export[3] = [0.45, 0.55, 0.0]  # a small change (0.8 -> 0.45 on Keras's class): listed after the large one
    assert flipped(keras, export).tolist() == [1, 3]


def test_flips_sheet_written_only_when_something_flipped(tmp_path):
    images = np.random.default_rng(0).uniform(0, 255, (4, 24, 24, 3)).astype(np.float32)
    names = [f"img{i}.jpg" for i in range(4)]
    keras = _probs([0, 1, 2, 0])
    assert write_flips_sheet(tmp_path / "none.png", images, names, keras, keras.copy(), ["a", "b", "c"], "same") is None
    assert not (tmp_path / "none.png").exists()
    out = write_flips_sheet(tmp_path / "flips" / "x.png", images, names, keras, _probs([1, 1, 0, 0]), ["a", "b", "c"], "x")
    assert out == tmp_path / "flips" / "x.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["x.png"]  # no temporary file left


# ---------------------------------------------------------------- summary and exit code
def _row(preset, status, integer=True, detail=""):
    parity = {"n": 1000, "agreement": 0.99, "agreement_ci95": [0.982, 0.995], "accuracy": 0.9, "drop_points": 0.1,
              "drop_ci95": [-0.2, 0.4], "max_abs_dprob": 0.1}
    return ExportRow(preset, status=status, parity=parity, detail=detail, integer=integer)


def test_every_integer_preset_failing_is_said_first_and_exits_1():
    rows = [_row("tflite_fp32", "ok", integer=False), _row("tflite_int8", "failed", detail="agreement 96.8% below floor"),
            _row("onnx_int8", "inconclusive", detail="too few images: ...")]
    lines = problems(rows, 0.5)
    assert lines[0] == "no integer model within the 0.5-point budget: tflite_int8, onnx_int8 did not pass"
    assert lines[1:] == ["tflite_int8: failed: agreement 96.8% below floor", "onnx_int8: inconclusive: too few images: ..."]
    assert exit_code(rows) == 1
    assert "| tflite_int8 | failed |" in summary_table(rows)


def test_an_inconclusive_preset_alone_does_not_fail_the_command():
    rows = [_row("tflite_int8", "ok"), _row("onnx_int8", "inconclusive", detail="too few images")]
    assert problems(rows, 0.5) == ["onnx_int8: inconclusive: too few images"]
    assert exit_code(rows) == 0
    assert exit_code([_row("tflite_fp32", "ok", integer=False)]) == 0  # no integer preset asked for: nothing to miss
    assert exit_code([_row("tflite_int8", "ok"), _row("onnx_fp32", "error", integer=False)]) == 1


# ---------------------------------------------------------------- calibration sampling
def test_stratified_sample_is_as_even_as_the_classes_allow():
    items = [(f"a{i}", 0) for i in range(90)] + [(f"b{i}", 1) for i in range(8)] + [(f"c{i}", 2) for i in range(30)]
    got = sample(items, 60, seed=0, stratified=True)
    counts = np.bincount([label for _, label in got], minlength=3)
    assert len(got) == 60 and counts[1] == 8 and abs(int(counts[0]) - int(counts[2])) <= 1
    assert got == sample(items, 60, seed=0, stratified=True)  # seeded
    assert sample(items, 0, seed=0, stratified=True) == items
    random = np.bincount([label for _, label in sample(items, 60, seed=0)], minlength=3)
    assert random[0] > counts[0]  # a random sample follows the imbalance


# ---------------------------------------------------------------- the accuracy-controlled search
class FakeQuantizer:
    """model(denylist) -> bytes naming how many layers stayed float."""

    def __init__(self):
        self.calls = []

    def model(self, denylist=()):
        self.calls.append(list(denylist))
        return str(len(denylist)).encode()


def _ranking(n):
    from edgetune.convert.accuracy_control import LayerError

    return [LayerError(f"t{i}", "CONV_2D", 5.0 - i * 0.1, 0.0, 0.01) for i in range(n)]


def test_search_keeps_the_fewest_layers_that_meet_the_targets():
    from edgetune.convert.accuracy_control import Targets, search

    def judge(model):  # agreement rises with each float layer; the targets are met from 5 layers on
        k = int(model)
        return 0.97 + 0.004 * k, max(0.0, 1.0 - 0.15 * k)

    q = FakeQuantizer()
    model, float_layers, trials = search(q, _ranking(20), judge, Targets(0.99, 0.5, 16))
    assert model == b"5" and float_layers == ["t0", "t1", "t2", "t3", "t4"]
    assert [t.float_layers for t in trials] == [0, 1, 2, 4, 8, 6, 5]  # doubling, then bisection
    assert [t.met for t in trials] == [False] * 4 + [True] * 3


def test_search_that_cannot_meet_the_targets_returns_the_best_it_saw():
    from edgetune.convert.accuracy_control import Targets, search

    def judge(model):
        k = int(model)
        return {0: 0.95, 1: 0.96, 2: 0.97, 3: 0.97}[k], 1.0

    model, float_layers, trials = search(FakeQuantizer(), _ranking(3), judge, Targets(0.99, 0.5, 16))
    assert model == b"2" and float_layers == ["t0", "t1"]  # ties go to fewer float layers
    assert not any(t.met for t in trials)


def test_search_never_picks_a_model_over_the_latency_budget():
    from edgetune.convert.accuracy_control import Targets, search

    def judge(model):  # the targets need 6 float layers, but each costs 5% latency: 6 is 1.30x
        k = int(model)
        return (0.995 if k >= 6 else 0.95 + 0.005 * k), 0.0

    model, float_layers, trials = search(FakeQuantizer(), _ranking(20), judge, Targets(0.99, 0.5, 16, 1.25),
                                         cost=lambda m: 1 + 0.05 * int(m))
    assert model == b"5" and len(float_layers) == 5  # the best agreement within 1.25x
    assert [t.float_layers for t in trials] == [0, 1, 2, 4, 8, 6, 5]
    assert [t.latency_ratio for t in trials][1:] == pytest.approx([1.05, 1.1, 1.2, 1.4, 1.3, 1.25])
    assert not any(t.met for t in trials)


def test_search_keeps_the_input_stage_float_in_every_candidate_and_counts_it():
    from edgetune.convert.accuracy_control import LayerError, Targets, input_stage, search

    errors = [LayerError("pad", "PADV2", 0.6, 0.0, 1.0), LayerError("conv1", "CONV_2D", 0.5, 0.0, 0.02)] + _ranking(10)
    keep = input_stage(errors)
    assert [e.tensor for e in keep] == ["pad", "conv1"]  # up to and including the first convolution
    assert input_stage([LayerError("add", "ADD", 1.0, 0.0, 1.0)]) == []  # no convolution: nothing to keep

    def judge(model):  # the targets are met with 2 ops beyond the input stage (4 float in all)
        return (0.992 if int(model) >= 4 else 0.98), 0.0

    q = FakeQuantizer()
    model, float_layers, trials = search(q, errors, judge, Targets(0.99, 0.5, 16), keep=keep)
    assert model == b"4" and float_layers == ["pad", "conv1", "t0", "t1"]
    assert all(call[:2] == ["pad", "conv1"] for call in q.calls)  # never quantized, whatever the candidate
    assert all(call.count("pad") == 1 for call in q.calls)  # ranked candidates do not add them twice
    assert [t.float_layers for t in trials] == [2, 3, 4]  # input stage alone first, counted in every trial
    capped = search(FakeQuantizer(), errors, judge, Targets(0.99, 0.5, 3), keep=keep)[2]
    assert [t.float_layers for t in capped] == [2, 3]  # the cap on float ops includes the input stage


def test_candidate_orders():
    from edgetune.convert.accuracy_control import LayerError, ranked, tail

    errors = [LayerError("a", "CONV_2D", 0.3, 0, 1), LayerError("b", "ADD", 2.0, 0, 1), LayerError("c", "MEAN", 0.5, 0, 1)]
    assert [e.tensor for e in ranked(errors)] == ["b", "c", "a"]
    assert [e.tensor for e in tail(errors)] == ["c", "b", "a"]


# ---------------------------------------------------------------- done_presets
def test_done_presets_trusts_only_files_in_place_for_the_same_model(tmp_path):
    from edgetune.contract import sha256_file

    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    (run / "model.keras").write_bytes(b"model")
    model = run / "export" / "tflite_int8.tflite"
    model.write_bytes(b"x")
    rows = [{"preset": "tflite_int8", "status": "ok", "path": str(model)},
            {"preset": "onnx_int8", "status": "ok", "path": str(run / "export" / "onnx_int8.onnx")},  # file gone
            {"preset": "tflite_fp16", "status": "error", "path": None}]
    report = {"model_sha256": sha256_file(run / "model.keras"), "rows": rows}
    (run / "export" / "convert_report.json").write_text(json.dumps(report))
    assert done_presets(run) == {"tflite_int8"}
    (run / "model.keras").write_bytes(b"retrained")  # another model: every export is stale
    assert done_presets(run) == set()
    assert done_presets(tmp_path / "nothing") == set()


@pytest.mark.parametrize("alpha", [0.35, 0.5, 0.75, 1.0, 1.3, 1.4])
def test_alpha_is_read_off_the_weights_of_runs_without_it(alpha):
    from types import SimpleNamespace

    from edgetune.convert.tfmot import model_alpha

    v = 320 * alpha
    d = max(8, int(v + 4) // 8 * 8)
    filters = d + 8 if d < 0.9 * v else d  # keras.applications' _make_divisible
    kernel = SimpleNamespace(shape=(1, 1, 960, filters))
    base = SimpleNamespace(get_layer=lambda name: SimpleNamespace(kernel=kernel))
    inp = SimpleNamespace(meta=SimpleNamespace(source={"architecture": "prose alpha=9"}),
                          keras_model=SimpleNamespace(get_layer=lambda name: base))
    assert model_alpha(inp) == alpha
    inp.meta.source["alpha"] = 0.75
    assert model_alpha(inp) == 0.75


def test_export_folder_not_made_by_edgetune_is_refused(tmp_path):
    from edgetune import UserError
    from edgetune.convert.report import open_export

    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="edgetune did not make it"):
        with open_export(tmp_path):
            pass
    assert (tmp_path / "export" / "notes.txt").read_text() == "mine"


def test_read_only_export_folder_is_one_line(tmp_path, monkeypatch):
    import errno

    from edgetune import UserError
    from edgetune.convert import report

    def refuse(folder, kind, **kw):
        raise OSError(errno.EROFS, "Read-only file system", str(folder))

    monkeypatch.setattr("edgetune.outputs.mark_output", refuse)
    with pytest.raises(UserError, match="cannot write the export folder .*Read-only file system"):
        with report.open_export(tmp_path):
            pass
    assert not Path(tmp_path / "export" / "convert_report.json").exists()


# ---------------------------------------------------------------- activation ranges and the search over calibrations
def test_extremes_are_exact_across_images():
    from edgetune.convert.activation_ranges import _Extremes

    rng = np.random.default_rng(0)
    chunks = [rng.standard_normal(n).astype(np.float32) for n in (500, 3, 1000, 7)]
    e = _Extremes(keep=5)
    for c in chunks:
        e.add(c)
    everything = np.sort(np.concatenate(chunks))
    assert e.range() == (float(everything[4]), float(everything[-5]))


def test_accuracy_control_tries_percentile_ranges_before_float_ops(monkeypatch):
    """`_ranges_first`: the first percentile meeting the targets wins; when none does, the calibration that
    agreed best (min/max included) stays in the quantizer for the float-op search."""
    from types import SimpleNamespace

    from edgetune.convert import ac_preset, activation_ranges
    from edgetune.convert.accuracy_control import Trial
    from edgetune.convert.activation_ranges import RangeSummary
    from edgetune.convert.config import ConvertConfig

    class Quantizer:
        def __init__(self):
            self.calibrated = b"minmax"

        def use_calibration(self, calibrated):
            self.calibrated = calibrated

        def model(self, denylist=()):
            return b"int8 from " + self.calibrated

    def fake_ranges(calibrated, images, p):
        assert calibrated == b"minmax"  # every percentile starts from the converter's own calibration
        return f"p{p:g}".encode(), RangeSummary(p, 3, 0.9, 0.5)

    inp = SimpleNamespace(calibration=np.zeros((2, 8, 8, 3), np.float32))
    first = Trial("none", 0, 0.97, 0.3, False)
    results = {b"int8 from p99.999": (0.985, 0.2), b"int8 from p99.99": (0.992, 0.4), b"int8 from p99": (0.95, 1.0)}
    monkeypatch.setattr(activation_ranges, "percentile_ranges", fake_ranges)
    cfg = ConvertConfig(ac_range_percentiles="99.999,99.99,99")
    q = Quantizer()
    model, ranges, trials, met, calibrations = ac_preset._ranges_first(q, inp, cfg, results.get, b"int8 from minmax", first)
    assert met and model == b"int8 from p99.99" and ranges["percentile"] == 99.99 and ranges["method"] == "percentile"
    assert [t.order for t in trials] == ["percentile 99.999", "percentile 99.99"]  # stops at the first that meets

    cfg = ConvertConfig(ac_range_percentiles="99.999,99", ac_min_agreement=0.999)
    q = Quantizer()
    model, ranges, trials, met, calibrations = ac_preset._ranges_first(q, inp, cfg, results.get, b"int8 from minmax", first)
    assert not met and model == b"int8 from p99.999" and q.calibrated == b"p99.999" and len(trials) == 2
    assert [c for c, _ in calibrations] == [b"p99.999", b"minmax"]  # the float-op search tries both

    q = Quantizer()
    model, ranges, trials, met, calibrations = ac_preset._ranges_first(q, inp, cfg, results.get, b"int8 from minmax",
                                                                       Trial("none", 0, 0.99, 0.0, False))
    assert not met and ranges == {"method": "min/max"} and q.calibrated == b"minmax"  # min/max agreed best
    assert calibrations == [(b"minmax", {"method": "min/max"})]

    q = Quantizer()  # the default: min/max only, nothing tried before the float-op search
    model, ranges, trials, met, calibrations = ac_preset._ranges_first(q, inp, ConvertConfig(), results.get,
                                                                       b"int8 from minmax", first)
    assert (model, ranges, trials, met) == (b"int8 from minmax", {"method": "min/max"}, [], False)
    assert calibrations == [(b"minmax", {"method": "min/max"})]


def test_float_op_search_tries_both_calibrations_and_keeps_the_fewest_float_ops(monkeypatch):
    from edgetune.convert import ac_preset, accuracy_control
    from edgetune.convert.accuracy_control import LayerError, Trial
    from edgetune.convert.config import ConvertConfig

    class Quantizer:
        calibrated = b"p100"

        def use_calibration(self, calibrated):
            self.calibrated = calibrated

        def layer_errors(self):
            # Each calibration ranks its own ops: names carry the calibration they were measured on.
            return [LayerError(f"{self.calibrated.decode()}-t{i}", "CONV_2D", 1.0 / (i + 1), 0.0, 0.1) for i in range(20)]

    # What each calibration and order needs: percentile ranges meet with a 13-op tail, min/max with 1 ranked op.
    needs = {(b"p100", "ranked"): None, (b"p100", "tail"): 13, (b"minmax", "ranked"): 1}

    def fake_search(quantizer, candidates, judge, targets, order, cost, keep=()):
        assert [e.tensor for e in keep] == [f"{quantizer.calibrated.decode()}-t0"]  # the first op is a convolution
        k = needs.get((quantizer.calibrated, order))
        if k is None:
            return b"best-effort", ["t0"], [Trial(order, 0, 0.98, 0.0, False), Trial(order, 1, 0.985, 0.0, False)]
        return quantizer.calibrated + b"+%d" % k, [c.tensor for c in candidates[:k]], [Trial(order, k, 0.992, 0.1, True)]

    monkeypatch.setattr(accuracy_control, "search", fake_search)
    cfg = ConvertConfig(ac_max_latency_ratio=0)
    q = Quantizer()
    calibrations = [(b"p100", {"method": "percentile", "percentile": 100.0}), (b"minmax", {"method": "min/max"})]
    model, float_layers, ranges, trials, errors = ac_preset._search(q, None, cfg, None, b"plain", None, calibrations)
    assert model == b"minmax+1" and float_layers == ["minmax-t0"] and ranges == {"method": "min/max"}
    assert [t.order for t in trials] == ["ranked, percentile 100 ranges", "ranked, percentile 100 ranges",
                                         "tail, percentile 100 ranges", "ranked, min/max ranges"]
    assert len(errors) == 20 and errors[0].tensor == "minmax-t0"
