"""Fault injection: SIGKILL `train`, `convert` and the pipeline at random moments, then check what is left.

After every kill: the source data is byte-identical, nothing half-written looks complete (no run dir
without its complete marker, no export without its metadata), and a rerun finishes. The kill moments are
drawn from a seeded generator over each command's own duration, so every run of the suite hits the same
moments and a failure can be replayed.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_tree, pretrained_weights_or_none

from edgetune.outputs import is_complete, read_marker

pytestmark = pytest.mark.slow
TRAIN_FLAGS = ["--image-size", "48", "--batch-size", "8", "--epochs", "2", "--fine-tune-epochs", "1",
               "--weights", pretrained_weights_or_none(), "--verbose", "0"]


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgetune.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def kill_after(proc: subprocess.Popen, seconds: float) -> bool:
    """SIGKILL the command (and its children) after `seconds`; False when it finished first."""
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def finish(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgetune.cli", *args], capture_output=True, text=True, timeout=900)


def duration(*args: str, ok: tuple[int, ...] = (0,)) -> float:
    t0 = time.perf_counter()
    r = finish(*args)
    assert r.returncode in ok, r.stderr[-3000:]
    return time.perf_counter() - t0


def assert_never_looks_complete(out: Path) -> None:
    """A killed run is either absent, or the previous complete run, never a half-written one."""
    if out.exists():
        assert is_complete(out, "run") and (out / "metadata.json").is_file() and (out / "model.keras").is_file()
    for sibling in out.parent.glob(f"{out.name}.partial"):
        marker = read_marker(sibling)
        assert marker is None or marker.get("state") == "partial"  # an interrupted run says so


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults") / "data"
    make_image_tree(root / "train", per_class=10, seed=1)
    make_image_tree(root / "validation", per_class=6, seed=2)
    return root


def test_train_killed_at_random_moments(data, tmp_path):
    source = digest(data)
    full = duration("train", "--data", str(data), "--out", str(tmp_path / "timing"), *TRAIN_FLAGS)
    rng = np.random.default_rng(11)
    for k, moment in enumerate(sorted(rng.uniform(0.15, 0.95, 2) * full)):
        out = tmp_path / f"run{k}"
        killed = kill_after(start("train", "--data", str(data), "--out", str(out), *TRAIN_FLAGS), moment)
        assert digest(data) == source
        assert_never_looks_complete(out)
        if not killed:
            continue
        resumable = (out.with_name(out.name + ".partial") / "checkpoint" / "state.json").is_file()
        r = finish("train", "--data", str(data), "--out", str(out), *TRAIN_FLAGS, *(["--resume"] if resumable else []))
        assert r.returncode == 0, f"rerun after a kill at {moment:.1f} s failed:\n{r.stderr[-3000:]}"
        assert is_complete(out, "run") and digest(data) == source
        assert not out.with_name(out.name + ".partial").exists()


def _exports_are_whole(export: Path, finished: bool = False) -> None:
    """Every model file in export/ has its metadata beside it and loads; temporaries never count as exports.

    A kill can leave a temporary behind: it is a dot-file (never under a preset's name) and the next convert
    removes it, so a finished export has none.
    """
    from edgetune.runtime import Predictor

    for model in export.glob("*.tflite"):
        if model.name.startswith("."):
            assert ".tmp." in model.name and not finished, model
            continue
        assert model.with_suffix(".json").is_file(), model
        Predictor.from_path(model)


def test_convert_killed_at_random_moments_then_finished(data, tmp_path):
    run = tmp_path / "run"
    assert finish("train", "--data", str(data), "--out", str(run), *TRAIN_FLAGS).returncode == 0
    presets = "tflite_fp32,tflite_fp16,tflite_int8"
    scratch = tmp_path / "scratch"
    subprocess.run(["cp", "-a", str(run), str(scratch)], check=True)
    # exit 1 is a verdict (a preset failed its gate on 12 held-out images), not a crash
    full = duration("convert", str(scratch), "--preset", presets, "--calibration-images", "8", ok=(0, 1))
    source, model_sha = digest(data), hashlib.sha256((run / "model.keras").read_bytes()).hexdigest()
    rng = np.random.default_rng(12)
    for moment in sorted(rng.uniform(0.2, 0.9, 2) * full):
        kill_after(start("convert", str(run), "--preset", presets, "--calibration-images", "8"), moment)
        assert digest(data) == source and hashlib.sha256((run / "model.keras").read_bytes()).hexdigest() == model_sha
        if (run / "export").is_dir():
            _exports_are_whole(run / "export")
    r = finish("convert", str(run), "--preset", presets, "--calibration-images", "8")
    assert r.returncode in (0, 1), r.stderr[-3000:]  # 1: a preset failed its gate, which is a verdict, not a crash
    report = json.loads((run / "export" / "convert_report.json").read_text())
    assert {row["preset"] for row in report["rows"]} >= set(presets.split(","))
    _exports_are_whole(run / "export", finished=True)


def test_pipeline_resumes_an_interrupted_training(data, tmp_path):
    out = tmp_path / "run"
    flags = ["pipeline", "--data", str(data), "--out", str(out), "--quick", "--quick-images", "10", "--image-size", "48",
             "--epochs", "3", "--weights", pretrained_weights_or_none(), "--presets", "tflite_fp32,tflite_int8", "--threads", "1",
             "--min-runs", "3", "--min-time", "0", "--int8-floor", "0", "--max-drop", "100"]
    proc = start(*flags)
    state = out.with_name(out.name + ".partial") / "checkpoint" / "state.json"
    deadline = time.time() + 600
    while not state.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)  # kill right after the first epoch checkpoint: a resumable interruption
    assert state.is_file(), "the training never checkpointed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert_never_looks_complete(out)
    r = finish(*flags)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming the interrupted run" in r.stderr
    assert is_complete(out, "run") and (out / "report.md").is_file()
