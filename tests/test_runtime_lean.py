"""The runtime never needs TensorFlow: a blocked import still predicts, and a bare `pip install` works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
MODEL = FIXTURES / "models" / "tiny3_int8.tflite"
ONNX_MODEL = FIXTURES / "models" / "tiny3_fp32_onnx.onnx"

# Installed as sitecustomize in a PYTHONPATH folder: any import of tensorflow, keras or tf_keras fails,
# as on a Raspberry Pi without them.
BLOCKER = textwrap.dedent("""
    import sys

    class _NoTensorFlow:
        BLOCKED = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization", "tf2onnx")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"{name} is blocked: the lean runtime must not import it")
            return None

    sys.meta_path.insert(0, _NoTensorFlow())
""")


def run_blocked(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    site = tmp_path / "blocker"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120)


def test_blocker_really_blocks(tmp_path):
    r = run_blocked(tmp_path, "-c", "import tensorflow")
    assert r.returncode != 0 and "blocked" in r.stderr


def test_import_and_predict_without_tensorflow(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        import edgetune.runtime
        from edgetune.runtime import Predictor
        for m in ({str(MODEL)!r}, {str(ONNX_MODEL)!r}):
            p = Predictor.from_path(m)
            print(p.labels[p.predict_files([{str(sorted((FIXTURES / 'images').iterdir())[0])!r}])[0].argmax()])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
        print("heavy:", heavy)
    """)
    r = run_blocked(tmp_path, "-c", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["red", "red", "heavy:", "[]"]


def test_cli_predict_and_bench_without_tensorflow(tmp_path):
    r = run_blocked(tmp_path, "-m", "edgetune.cli", "predict", str(MODEL), str(FIXTURES / "images"), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert len(doc["predictions"]) == 5 and doc["errors"] == []
    from edgetune.cli import COMMANDS

    if "bench" in COMMANDS:  # the benchmarks stage registers it; its parser must load without TensorFlow too
        r = run_blocked(tmp_path, "-m", "edgetune.cli", "bench", "--help")
        assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_base_install_in_a_fresh_venv_predicts(tmp_path):
    """`pip install edgetune` without extras into a venv without system site-packages, then predict."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    freeze = subprocess.run([str(py), "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout.lower()
    assert "tensorflow" not in freeze and "onnxruntime" not in freeze
    r = subprocess.run([str(venv / "bin" / "edgetune"), "predict", str(MODEL), str(FIXTURES / "images")],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [line.split(": ")[1].split(" (")[0] for line in r.stdout.splitlines()] == ["red", "green", "blue", "red", "green"]
    # ONNX needs the [onnx] extra: the error says how to get it.
    r = subprocess.run([str(venv / "bin" / "edgetune"), "predict", str(ONNX_MODEL), str(FIXTURES / "images")],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and "edgetune[onnx]" in r.stderr
