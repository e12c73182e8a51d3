"""convert's gate plumbing on constructed data: flips sheet, summary and exit code, calibration sampling,
the accuracy-controlled search, and what `done_presets` trusts. Fast: no TensorFlow model is trained here."""

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
