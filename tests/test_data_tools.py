"""`edgetune data fetch|split|check` and the folder scanning behind training (no TensorFlow needed)."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import CATS_DOGS, make_image_tree

from edgetune.cli import main
from edgetune.train import datasets, folders
from edgetune.train.datasets import KnownDataset, content_digest, fetch


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# ---------------------------------------------------------------- split
def test_split_copies_stratified_and_verified(tiny_tree, tmp_path, capsys):
    before = {p: _sha(p) for p in tiny_tree.rglob("*.jpg")}
    assert main(["data", "split", str(tiny_tree), "--out", str(tmp_path / "dst"), "--test-fraction", "0.25", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "cats" in out and "total" in out
    for c in ("cats", "dogs"):
        assert len(list((tmp_path / "dst/train" / c).iterdir())) == 9
        assert len(list((tmp_path / "dst/test" / c).iterdir())) == 3
    # copied, never moved: the source is intact, and every copy has its source's bytes
    assert {p: _sha(p) for p in tiny_tree.rglob("*.jpg")} == before
    copies = {p.parent.name + "/" + p.name: _sha(p) for p in (tmp_path / "dst").rglob("*.jpg")}
    assert copies == {p.parent.name + "/" + p.name: h for p, h in before.items()}


def test_split_is_deterministic_and_seed_dependent(tiny_tree, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        folders.split_folder(tiny_tree, tmp_path / name, 0.25, seed)
    listing = {n: sorted(p.name for p in (tmp_path / n / "test").rglob("*.jpg")) for n in "abc"}
    assert listing["a"] == listing["b"]
    assert listing["a"] != listing["c"]


def test_split_refuses_non_empty_destination_unless_force(tiny_tree, tmp_path, capsys):
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("x")
    assert main(["data", "split", str(tiny_tree), "--out", str(dst)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (dst / "keep.txt").exists()
    assert main(["data", "split", str(tiny_tree), "--out", str(dst), "--force"]) == 0
    assert not (dst / "keep.txt").exists() and (dst / "train").is_dir()


def test_split_failure_half_way_leaves_nothing(tiny_tree, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_copy = shutil.copy2

    def flaky_copy(src, dst):
        calls["n"] += 1
        if calls["n"] == 7:
            raise OSError("disk full")
        return real_copy(src, dst)

    monkeypatch.setattr(folders.shutil, "copy2", flaky_copy)
    with pytest.raises(OSError):
        folders.split_folder(tiny_tree, tmp_path / "dst", 0.2, 0)
    assert not (tmp_path / "dst").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dst")] == []


@pytest.mark.parametrize("fraction", ["0", "1", "1.5"])
def test_split_rejects_bad_fraction(tiny_tree, tmp_path, fraction):
    assert main(["data", "split", str(tiny_tree), "--out", str(tmp_path / "d"), "--test-fraction", fraction]) == 2


# ---------------------------------------------------------------- check
def test_check_reports_bad_tiny_and_non_images(tiny_tree, capsys):
    (tiny_tree / "cats" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = (tiny_tree / "dogs" / "img_000.jpg").read_bytes()
    (tiny_tree / "dogs" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (tiny_tree / "dogs" / "notes.txt").write_text("hello")
    from PIL import Image

    Image.new("RGB", (10, 12)).save(tiny_tree / "cats" / "small.png")
    assert main(["data", "check", str(tiny_tree)]) == 1
    out = capsys.readouterr().out
    assert "broken.jpg" in out and "truncated.jpg" in out
    assert "tiny" in out and "small.png" in out
    assert "notes.txt" in out
    assert "2 problem(s)" in out


def test_check_clean_tree_and_split_layout(tiny_dataset, capsys):
    assert main(["data", "check", str(tiny_dataset)]) == 0
    out = capsys.readouterr().out
    assert "== train" in out and "== val" in out and "OK" in out


def test_check_reports_imbalance_and_empty_class(tmp_path, capsys):
    make_image_tree(tmp_path / "t", per_class=6)
    for p in list((tmp_path / "t" / "dogs").iterdir())[:4]:
        p.unlink()
    (tmp_path / "t" / "birds").mkdir()
    assert main(["data", "check", str(tmp_path / "t")]) == 1
    out = capsys.readouterr().out
    assert "imbalance" in out and "empty class" in out and "birds" in out


def test_check_missing_folder_is_exit_2(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_data_commands_never_import_tensorflow(tiny_tree, tmp_path):
    code = (
        "import sys; from edgetune.cli import main; "
        f"rc = main(['data', 'check', {str(tiny_tree)!r}]); "
        f"rc |= main(['data', 'split', {str(tiny_tree)!r}, '--out', {str(tmp_path / 'o')!r}]); "
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'; sys.exit(rc)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


# ---------------------------------------------------------------- fetch
@pytest.fixture
def small_known(tmp_path, monkeypatch):
    """A registered tiny data set (so the download path runs for real against a fake server)."""
    src = make_image_tree(tmp_path / "src" / "mini", per_class=3)
    digest, count = content_digest(src)
    ds = KnownDataset("mini", "https://example.invalid/mini.zip", "mini", count, digest)
    monkeypatch.setitem(datasets.DATASETS, "mini", ds)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(src.rglob("*.jpg")):
            zf.write(p, Path("mini") / p.relative_to(src))
    return ds, src, buf.getvalue()


class _FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_fetch_downloads_verifies_and_then_uses_the_cache(small_known, tmp_path, monkeypatch):
    _, _, payload = small_known
    calls = []
    monkeypatch.setattr(datasets.urllib.request, "urlopen", lambda url, timeout: calls.append(url) or _FakeResponse(payload))
    cache = tmp_path / "cache"
    path = fetch("mini", cache=cache)
    assert path == cache / "mini" and len(list(path.rglob("*.jpg"))) == 6
    assert fetch("mini", cache=cache) == path
    assert len(calls) == 1  # the second call was served from the cache
    assert [p.name for p in cache.iterdir()] == ["mini"]  # no temporary leftovers


def test_fetch_rejects_corrupted_download(small_known, tmp_path, monkeypatch):
    ds, src, _ = small_known
    (src / "cats" / "img_000.jpg").write_bytes(b"tampered")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(src.rglob("*.jpg")):
            zf.write(p, Path("mini") / p.relative_to(src))
    monkeypatch.setattr(datasets.urllib.request, "urlopen", lambda url, timeout: _FakeResponse(buf.getvalue()))
    with pytest.raises(Exception, match="does not match"):
        fetch("mini", cache=tmp_path / "cache")
    assert not (tmp_path / "cache" / "mini").exists()


def test_fetch_offline_error_names_the_local_alternative(small_known, tmp_path, monkeypatch):
    def offline(url, timeout):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", offline)
    with pytest.raises(Exception, match="--from"):
        fetch("mini", cache=tmp_path / "cache")


def test_fetch_from_local_zip_and_bad_zip(small_known, tmp_path):
    _, _, payload = small_known
    z = tmp_path / "mini.zip"
    z.write_bytes(payload)
    assert fetch("mini", source=z, cache=tmp_path / "c1").is_dir()
    (tmp_path / "bad.zip").write_bytes(b"PK not a zip")
    with pytest.raises(Exception, match="not a valid zip"):
        fetch("mini", source=tmp_path / "bad.zip", cache=tmp_path / "c2")


def test_fetch_cats_vs_dogs_from_shared_folder(shared_assets, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGETUNE_HOME", str(tmp_path / "home"))
    assert main(["data", "fetch", "cats-vs-dogs", "--from", str(CATS_DOGS)]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == tmp_path / "home" / "datasets" / "cats_and_dogs_filtered"
    assert len(list((path / "validation" / "dogs").iterdir())) == 500
