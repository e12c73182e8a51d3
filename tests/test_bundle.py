"""edgetune bundle: what a bundle holds, the wheel inside it, --verify, output safety, bench on the Pi's copy.

The run is built around the committed tiny fixture models (no TensorFlow); its bench results are real
(`run_bench`, one thread), so the bundled model is the one their recommendation names. The slow test
installs the bundle into a fresh venv with install.sh (pip fetches numpy, Pillow and LiteRT) and
compares its predictions with this checkout's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import synth_color_image
from PIL import Image

from edgetune import UserError, __version__
from edgetune.bundle import BundleConfig, choose_models, make_bundle, pick_results, verify_bundle
from edgetune.cli import main
from edgetune.contract import ModelMetadata, Preprocessing, write_metadata, write_split
from edgetune.versions import package_version

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "fixtures" / "models"
LABELS = ["red", "green", "blue"]


synth = synth_color_image


def make_run(root: Path, with_results: bool = True) -> Path:
    """A run dir around the tiny3 fixture models: data, val/test splits, exports, a reference, bench results."""
    from edgetune.benchmarks import BenchConfig, run_bench, save_reference

    data, run = root / "data", root / "run"
    splits: dict[str, list[tuple[str, str]]] = {"val": [], "test": []}
    for k, name in enumerate(LABELS):
        (data / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(synth(k, 10 * k + i)).save(data / name / f"{i}.png")
            splits["val" if i < 2 else "test"].append((f"{name}/{i}.png", name))
    for split, items in splits.items():
        write_split(run / "splits" / f"{split}.txt", items)
    write_metadata(run / "metadata.json", ModelMetadata(labels=LABELS, preprocessing=Preprocessing(size=(32, 32)),
                                                        output_kind="softmax_logits", source={"data_root": str(data)}))
    (run / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (run / "export").mkdir()
    for stem in ("tiny3_fp32", "tiny3_int8", "tiny3_fp32_onnx"):
        for f in MODELS.glob(stem + ".*"):
            shutil.copy(f, run / "export" / f.name)
    # A "Keras" reference that is right on every image: independent of the models bundled.
    y = np.array([LABELS.index(label) for _, label in splits["test"]])
    save_reference(run, np.eye(3, dtype=np.float32)[y], "test")
    if with_results:
        run_bench(BenchConfig(targets=[run], split="test", threads="1", warmup=1, min_runs=5, min_time=0.0,
                              keras="off", e2e=False, raw=False, isolate=False, name="ws-cpu"))
    return run


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(run, bundle) made once per module: the wheel build takes ~10-20 s."""
    root = tmp_path_factory.mktemp("bundle")
    run = make_run(root)
    assert main(["bundle", str(run), "--out", str(root / "bundle")]) == 0
    return run, root / "bundle"


def copy_of(bundle: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(bundle, dest, symlinks=True)
    return dest


def test_bundle_holds_the_recommended_model_and_its_contract(built):
    run, bundle = built
    results = json.loads(next((run / "results").glob("*.json")).read_text())
    chosen = results["recommendation"]["fastest"]
    assert chosen and sorted(p.name for p in (bundle / "export").iterdir()) == sorted([chosen, Path(chosen).stem + ".json"])
    assert (bundle / "export" / chosen).read_bytes() == (run / "export" / chosen).read_bytes()
    for name in ("metadata.json", "labels.txt", "splits/test.txt", "reference/test_probs.npy", "reference/test_probs.json",
                 "results/ws-cpu.json", "README.txt", "manifest.json", "requirements.txt", "requirements-onnx.txt"):
        assert (bundle / name).is_file(), name
    assert os.access(bundle / "install.sh", os.X_OK)
    images = sorted(p.relative_to(bundle / "images").as_posix() for p in (bundle / "images").rglob("*.png"))
    assert images == sorted(line.split("\t")[0] for line in (run / "splits" / "test.txt").read_text().splitlines())
    readme = (bundle / "README.txt").read_text()
    assert f"edgetune predict export/{chosen} images" in readme and "bash install.sh" in readme
    assert "edgetune bench . --split test --data-root images" in readme and "fastest" in readme
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["models"] == [f"export/{chosen}"] and manifest["split"] == "test"
    listed = {f["path"] for f in manifest["files"]}
    assert f"export/{chosen}" in listed and "install.sh" in listed and "manifest.json" not in listed
    assert (bundle / ".edgetune-output.json").is_file()  # the marker: --force may replace it, nothing else


def test_requirements_are_pinned_to_this_machine(built):
    _, bundle = built
    base = [r for r in (bundle / "requirements.txt").read_text().splitlines() if r and not r.startswith("#")]
    # simplejpeg keeps its platform marker: a 32-bit Pi OS (no wheel) installs without it and decodes with Pillow.
    turbo = [r for r in base if r.startswith("simplejpeg")]
    assert turbo == [f'simplejpeg=={package_version("simplejpeg")}; platform_machine == "x86_64" or platform_machine == '
                     '"aarch64" or platform_machine == "AMD64" or platform_machine == "arm64"']
    assert sorted(set(base) - set(turbo)) == sorted(f"{n}=={package_version(n)}" for n in ("numpy", "pillow", "ai-edge-litert"))
    onnx = [r for r in (bundle / "requirements-onnx.txt").read_text().splitlines() if r and not r.startswith("#")]
    assert onnx == ["onnxruntime==1.31.1"]
    assert not list(bundle.glob("requirements-train.txt")) and not list(bundle.glob("requirements-dev.txt"))


def test_wheel_is_pure_python_and_holds_only_edgetune(built):
    _, bundle = built
    wheels = list((bundle / "wheels").iterdir())
    assert [w.name for w in wheels] == [f"edgetune-{__version__}-py3-none-any.whl"]
    with zipfile.ZipFile(wheels[0]) as zf:
        names = zf.namelist()
        entry_points = zf.read(f"edgetune-{__version__}.dist-info/entry_points.txt").decode()
        wheel_tag = zf.read(f"edgetune-{__version__}.dist-info/WHEEL").decode()
    assert "Tag: py3-none-any" in wheel_tag and "edgetune = edgetune.cli:main" in entry_points
    code = [n for n in names if not n.startswith(f"edgetune-{__version__}.dist-info/")]
    assert code and all(n.startswith("edgetune/") and n.endswith(".py") for n in code), code
    for module in ("edgetune/bundle.py", "edgetune/runtime/predictor.py", "edgetune/benchmarks/bench.py",
                   "edgetune/train/__init__.py", "edgetune/convert/__init__.py"):
        assert module in names
    assert not any("tests/" in n or "__pycache__" in n or "runs/" in n for n in names)


def test_verify_catches_a_deleted_and_a_modified_file(built, tmp_path: Path, capsys):
    _, bundle = built
    copy = copy_of(bundle, tmp_path)
    assert main(["bundle", "--verify", str(copy)]) == 0
    assert "ok:" in capsys.readouterr().out
    model = next((copy / "export").glob("*.tflite"))
    model.unlink()
    labels = copy / "labels.txt"
    labels.write_text(labels.read_text().replace("red", "der"))  # same size, other bytes
    (copy / "results" / "pi-pi.json").write_text("{}")  # what bench on the Pi adds: listed, not a failure
    assert main(["bundle", "--verify", str(copy)]) == 1
    err = capsys.readouterr().err
    assert f"missing: export/{model.name}" in err and "changed: labels.txt (same size, different sha256)" in err
    assert "results/pi-pi.json" in err and "1 missing, 1 changed" in err
    report = verify_bundle(copy)
    assert not report.ok and report.extra == ["results/pi-pi.json"]


def test_verify_runs_from_the_wheel_alone_without_numpy(built, tmp_path: Path):
    """install.sh checks the copy before anything is installed: the wheel's own code, standard library only."""
    _, bundle = built
    copy = copy_of(bundle, tmp_path)
    wheel = next((copy / "wheels").glob("*.whl"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | {"PYTHONPATH": str(wheel)}
    cmd = [sys.executable, "-S", "-c", "import numpy"]  # -S: no site-packages, no editable install
    assert subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True).returncode != 0
    ok = subprocess.run([sys.executable, "-S", "-m", "edgetune.bundle", str(copy)], env=env, cwd=tmp_path,
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "ok:" in ok.stdout, ok.stderr
    (copy / "README.txt").unlink()
    bad = subprocess.run([sys.executable, "-S", "-m", "edgetune.bundle", str(copy)], env=env, cwd=tmp_path,
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "missing: README.txt" in bad.stderr


def test_bundle_over_other_folders_is_refused(built, tmp_path: Path, capsys):
    run, bundle = built
    wheel = str(next((bundle / "wheels").glob("*.whl")))
    users = tmp_path / "mine"
    users.mkdir()
    (users / "notes.txt").write_text("keep me")
    assert main(["bundle", str(run), "--out", str(users), "--wheel", wheel, "--force"]) == 2
    assert "did not create" in capsys.readouterr().err
    assert [p.name for p in users.iterdir()] == ["notes.txt"] and (users / "notes.txt").read_text() == "keep me"
    assert main(["bundle", str(run), "--out", str(run / "bundle"), "--wheel", wheel]) == 2  # inside the input
    assert "inside the input" in capsys.readouterr().err and not (run / "bundle").exists()
    copy = copy_of(bundle, tmp_path)
    assert main(["bundle", str(run), "--out", str(copy), "--wheel", wheel]) == 2  # a bundle, but no --force
    assert "--force" in capsys.readouterr().err
    (copy / "stale.txt").write_text("old")
    assert main(["bundle", str(run), "--out", str(copy), "--wheel", wheel, "--force", "--preset", "all"]) == 0
    assert not (copy / "stale.txt").exists() and len(list((copy / "export").glob("*.json"))) == 3
    assert verify_bundle(copy).ok
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_model_choice(tmp_path: Path):
    run = make_run(tmp_path, with_results=False)
    assert pick_results(run) is None
    with pytest.raises(UserError, match="no tflite_int8 export: pass --preset"):
        choose_models(run, None, None)
    models, why = choose_models(run, "tiny3_int8,tiny3_fp32_onnx", None)
    assert [m.name for m in models] == ["tiny3_int8.tflite", "tiny3_fp32_onnx.onnx"] and "--preset" in why
    assert len(choose_models(run, "all", None)[0]) == 3
    with pytest.raises(UserError, match="has no \\['tflite_fp16'\\]"):
        choose_models(run, "tflite_fp16", None)
    shutil.copy(run / "export" / "tiny3_int8.tflite", run / "export" / "tflite_int8.tflite")
    shutil.copy(run / "export" / "tiny3_int8.json", run / "export" / "tflite_int8.json")
    models, why = choose_models(run, None, None)
    assert [m.name for m in models] == ["tflite_int8.tflite"] and "no bench results" in why
    # A Pi's results win over a newer workstation's: the recommendation was measured where the model runs.
    ws = {"kind": "edgetune-bench", "schema": 1, "created": "2030-01-02", "device": {"name": "ws", "kind": "cpu"},
          "config": {"split": "heldout"}, "models": [], "parity": [], "latency": [], "max_drop": 0.5,
          "recommendation": {"fastest": "tiny3_fp32.tflite", "smallest": "tiny3_int8.tflite"}}
    pi = {**ws, "created": "2030-01-01", "device": {"name": "pi5", "kind": "pi"},
          "recommendation": {"fastest": "tiny3_int8.tflite", "smallest": "tiny3_int8.tflite"}}
    (run / "results").mkdir()
    (run / "results" / "ws.json").write_text(json.dumps(ws))
    (run / "results" / "pi5.json").write_text(json.dumps(pi))
    (run / "results" / "broken.json").write_text("{")
    picked = pick_results(run)
    assert picked[0].name == "pi5.json"
    models, why = choose_models(run, None, picked)
    assert [m.name for m in models] == ["tiny3_int8.tflite"] and "fastest" in why and "pi5" in why
    assert pick_results(run, run / "results" / "ws.json")[1]["device"]["name"] == "ws"


def test_bad_inputs(tmp_path: Path, capsys):
    assert main(["bundle", str(tmp_path)]) == 2
    assert "not an edgetune run dir" in capsys.readouterr().err
    run = make_run(tmp_path, with_results=False)
    shutil.rmtree(run / "export")
    (run / "export").mkdir()
    assert main(["bundle", str(run)]) == 2
    assert "run `edgetune convert" in capsys.readouterr().err
    run2 = make_run(tmp_path / "two", with_results=False)
    (tmp_path / "two" / "data" / "red" / "3.png").unlink()
    assert main(["bundle", str(run2), "--preset", "tiny3_int8"]) == 2
    err = capsys.readouterr().err
    assert "1 images of the test split are missing" in err and "--split none" in err
    assert main(["bundle", str(run2), "--verify", str(tmp_path)]) == 2
    assert main(["bundle", "--verify", str(tmp_path)]) == 2
    assert "manifest.json is missing" in capsys.readouterr().err
    assert not (tmp_path / "two" / "run-bundle").exists()


def test_bench_on_the_bundle_measures_parity_against_the_reference(built, tmp_path: Path):
    """What the README tells the Pi to run: the bundle is a run dir for bench, images and reference included."""
    from edgetune.benchmarks import BenchConfig, run_bench

    _, bundle = built
    copy = copy_of(bundle, tmp_path)
    res = run_bench(BenchConfig(targets=[copy], split="test", data_root=copy / "images", threads="1", warmup=1,
                                min_runs=3, min_time=0.0, keras="off", e2e=False, raw=False, isolate=False, name="pi"))
    rows = {r["name"]: r for r in res["parity"]}
    model = next((copy / "export").glob("*.tflite")).name
    assert rows["keras"]["n"] == rows[model]["n"] == 12
    assert rows[model]["agreement"] is not None and rows[model]["accuracy"] > 0.6
    assert Path(res["_path"]) == copy / "results" / "pi.json"


def test_install_sh_is_valid_bash(built):
    _, bundle = built
    assert subprocess.run(["bash", "-n", str(bundle / "install.sh")]).returncode == 0
    text = (bundle / "install.sh").read_text()
    assert "@@" not in text and f"wheels/edgetune-{__version__}-py3-none-any.whl" in text
    assert subprocess.run(["bash", str(bundle / "install.sh"), "--nope"], capture_output=True).returncode == 2


@pytest.mark.slow
def test_install_sh_in_a_fresh_venv_predicts_like_this_checkout(built, tmp_path: Path):
    """A new user's journey on another machine: copy, `bash install.sh VENV`, `edgetune predict` (pip needs PyPI)."""
    from edgetune.runtime import Predictor, find_images

    _, bundle = built
    copy = copy_of(bundle, tmp_path)
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    base_python = getattr(sys, "_base_executable", sys.executable)
    proc = subprocess.run(["bash", str(copy / "install.sh"), str(venv)], cwd=tmp_path, capture_output=True, text=True,
                          env=env | {"PYTHON": base_python}, timeout=900)
    if proc.returncode != 0 and ("No matching distribution" in proc.stderr or "Could not find a version" in proc.stderr):
        pytest.skip("no access to PyPI for numpy/Pillow/ai-edge-litert: " + proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import edgetune; print(edgetune.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
    assert Path(where.stdout.strip()).is_relative_to(venv), where  # the wheel, not this checkout
    model = next((copy / "export").glob("*.tflite"))
    out = subprocess.run([str(venv / "bin" / "edgetune"), "predict", str(model), str(copy / "images"), "--json"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    theirs = {Path(p["path"]).name + p["path"].split("/")[-2]: p["top"][0]["label"] for p in json.loads(out.stdout)["predictions"]}
    files = find_images([copy / "images"])
    probs = Predictor.from_path(model).predict_files(files)
    ours = {Path(f).name + Path(f).parent.name: LABELS[int(i)] for f, i in zip(files, probs.argmax(1))}
    assert theirs == ours and len(ours) == 12


def _fake_wheel(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def test_wheel_checks_and_pins(tmp_path: Path, monkeypatch):
    from edgetune import _bundle_wheel

    info = "edgetune-9.9-py3-none-any.whl"
    meta = ("Metadata-Version: 2.1\nName: edgetune\nVersion: 9.9\nRequires-Dist: numpy>=1.23\n"
            "Requires-Dist: onnxruntime==1.31.1; extra == \"onnx\"\n"
            "Requires-Dist: tflite-runtime; platform_machine == \"aarch64\" and extra == \"legacy\"\n"
            "Requires-Dist: tensorflow==2.21.0; extra == \"train\"\nRequires-Dist: edgetune[train]; extra == \"dev\"\n")
    good = {"edgetune/__init__.py": "", "edgetune/bundle.py": "", "edgetune/runtime/__init__.py": "",
            "edgetune-9.9.dist-info/METADATA": meta, "edgetune-9.9.dist-info/WHEEL": "Root-Is-Purelib: true\nTag: py3-none-any\n"}
    wheel = _fake_wheel(tmp_path / info, good)
    assert "edgetune/bundle.py" in _bundle_wheel.check_wheel(wheel)
    reqs = _bundle_wheel.pinned_requirements(wheel)
    assert reqs[""] == [f"numpy=={package_version('numpy')}"] and reqs["onnx"] == ["onnxruntime==1.31.1"]
    assert reqs["legacy"][0].startswith("tflite-runtime") and reqs["legacy"][0].endswith('; platform_machine == "aarch64"')
    assert "train" not in reqs and "dev" not in reqs
    (tmp_path / "junk").mkdir()
    junk = _fake_wheel(tmp_path / "junk" / info, {**good, "tests/test_x.py": ""})
    with pytest.raises(UserError, match="not edgetune's"):
        _bundle_wheel.check_wheel(junk)
    with pytest.raises(UserError, match="pure-Python"):
        _bundle_wheel.check_wheel(_fake_wheel(tmp_path / "edgetune-9.9-cp311-cp311-linux_x86_64.whl", good))
    assert _bundle_wheel.source_tree() == ROOT  # this checkout (an editable install)
    monkeypatch.setattr(_bundle_wheel, "source_tree", lambda: None)
    with pytest.raises(UserError, match="installed from a wheel.*--wheel PATH"):
        _bundle_wheel.build_wheel(tmp_path)


def test_a_split_takes_its_rows_of_the_heldout_reference(built, tmp_path: Path):
    """bench stores the held-out reference (val rows, then test rows); --split test/val carries its slice."""
    from edgetune.benchmarks import read_reference, save_reference

    _, bundle = built
    wheel = next((bundle / "wheels").glob("*.whl"))
    run = make_run(tmp_path, with_results=False)
    shutil.rmtree(run / "reference")
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=18).astype(np.float32)  # 6 val + 12 test rows
    save_reference(run, probs, "heldout")
    for split, rows in (("test", probs[6:]), ("val", probs[:6])):
        out = tmp_path / f"b-{split}"
        make_bundle(BundleConfig(run=run, out=out, preset="tiny3_int8", split=split, wheel=wheel))
        got, info = read_reference(out, split)
        assert np.array_equal(got, rows) and info["files"] == [line.split("\t")[0] for line in
                                                               (run / "splits" / f"{split}.txt").read_text().splitlines()]
        assert "Keras model's outputs" in (out / "README.txt").read_text()
