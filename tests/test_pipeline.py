"""edgetune pipeline --quick on tiny generated data: train -> convert -> reference -> bench -> report.md."""

from __future__ import annotations

import json

import pytest
from pathlib import Path

from conftest import make_image_tree, pretrained_weights_or_none
from edgetune.pipeline import quick_subset
from edgetune import UserError
from edgetune.cli import main


def keras_n(run: Path) -> int:
    return sum(len((run / "splits" / f"{s}.txt").read_text().splitlines()) for s in ("val", "test"))


def test_quick_subset_keeps_layout(tmp_path: Path):
    make_image_tree(tmp_path / "data" / "train", per_class=5)
    make_image_tree(tmp_path / "data" / "validation", per_class=4, seed=3)
    sub = quick_subset(tmp_path / "data", tmp_path / "sub", per_class=3)
    for split in ("train", "validation"):
        for cls in ("cats", "dogs"):
            files = sorted(p.name for p in (sub / split / cls).iterdir())
            assert files == sorted(p.name for p in (tmp_path / "data" / split / cls).iterdir())[:3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "sub"]  # no temporary left behind
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("user data")
    with pytest.raises(UserError, match="did not create"):
        quick_subset(tmp_path / "data", tmp_path / "mine", per_class=3)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "user data"


def test_pipeline_quick_smoke(tmp_path: Path, capsys):
    data = tmp_path / "data"
    make_image_tree(data / "train", per_class=16, seed=1)
    make_image_tree(data / "validation", per_class=10, seed=2)
    out = tmp_path / "run"
    rc = main(["pipeline", "--data", str(data), "--out", str(out), "--quick", "--quick-images", "12", "--image-size", "48",
               "--weights", pretrained_weights_or_none(), "--threads", "1", "--min-runs", "5", "--min-time", "0",
               # a 10+1-epoch model on 20 held-out images: the gate is relaxed here, its outcomes are tested below
               "--int8-floor", "0", "--max-drop", "100"])
    assert rc == 0, capsys.readouterr().err[-3000:]
    report = (out / "report.md").read_text()
    assert "Parity" in report and "Latency" in report and "Recommendation" in report
    assert "95% interval" in report and "95% CI" in report  # what the test split can resolve, bench and training
    for row in ("keras predict", "keras call", "keras tf.function", "keras XLA"):  # TensorFlow is installed here
        assert row in report
    assert "fastest keras /" in report  # the speed-up against the best Keras path, not only predict()
    assert report.splitlines()[2].startswith("**")  # the first lines say whether an integer model made the budget
    results = json.loads(next((out / "results").glob("*.json")).read_text())
    names = {r["name"] for r in results["parity"]}
    exports = {p.name for p in (out / "export").iterdir() if p.suffix in (".tflite", ".onnx")}
    assert exports and names == exports | {"keras"}
    assert (out / "reference" / "heldout_probs.npy").is_file()
    for png in ("latency.png", "accuracy_latency_size.png"):
        assert (out / "results" / png).is_file() and f"results/{png}" in report
    keras = next(r for r in results["parity"] if r["name"] == "keras")
    assert keras["agreement"] is None and keras["n"] == keras_n(out)  # the reference: accuracy on every held-out image
    assert exports <= {"tflite_fp32.tflite", "tflite_int8.tflite", "onnx_fp32.onnx"}  # the --quick subset
    parity = {r["name"]: r for r in results["parity"]}
    assert parity["tflite_fp32.tflite"]["agreement"] == 1.0 and parity["tflite_fp32.tflite"]["max_abs_dprob"] < 1e-3


def test_report_says_first_when_no_integer_model_passed(tmp_path: Path):
    """Every integer preset failed: the report's first lines say so, list the reasons, and the exit code is 1."""
    from edgetune.benchmarks.results import make_results
    from edgetune.report import pipeline_report

    run = tmp_path / "run"
    run.mkdir()
    models = [{"name": "tflite_fp32.tflite", "format": "tflite", "preset": "tflite_fp32", "size_bytes": 9},
              {"name": "tflite_int8.tflite", "format": "tflite", "preset": "tflite_int8", "size_bytes": 3}]
    parity = [{"name": "keras", "n": 600, "accuracy": 0.885},
              {"name": "tflite_fp32.tflite", "within_budget": True, "verdict": "pass", "reason": "equal"},
              {"name": "tflite_int8.tflite", "within_budget": False, "verdict": "fail",
               "reason": "agreement 96.8% (95% CI 95.1-97.9%) vs floor 98.0% (below it with 95% confidence)"}]
    latency = [{"name": n, "mode": "predictor", "threads": 2, "status": "ok", "p50_ms": t, "p99_ms": t}
               for n, t in (("tflite_fp32.tflite", 3.0), ("tflite_int8.tflite", 1.0))]
    results = make_results({"name": "dev"}, {}, models, parity, latency, run=str(run), max_drop=0.5)
    converted = {"onnx_int8": {"preset": "onnx_int8", "status": "failed",
                               "parity": {"verdict": "fail", "reason": "drop +1.3 points (above it with 95% confidence)"}}}
    result = pipeline_report(run, results, converted, "", reproduce="edgetune pipeline")
    lines = result.report.read_text().splitlines()
    assert lines[2].startswith("**No integer model within the 0.5-point budget.**")
    head = "\n".join(lines[:10])
    assert "tflite_int8: fail" in head and "96.8%" in head and "onnx_int8: fail in convert" in head
    assert result.exit_code == 1 and len(result.problems) == 2
    assert "no integer model within the 0.5-point budget" in results["recommendation"]["line"]
