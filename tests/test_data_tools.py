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


def test_split_refuses_a_user_folder_even_with_force_and_replaces_its_own(tiny_tree, tmp_path, capsys):
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("x")
    for extra in ([], ["--force"]):
        assert main(["data", "split", str(tiny_tree), "--out", str(dst), *extra]) == 2
        assert "did not create" in capsys.readouterr().err
        assert (dst / "keep.txt").read_text() == "x" and sorted(p.name for p in dst.iterdir()) == ["keep.txt"]
    out = tmp_path / "out"
    assert main(["data", "split", str(tiny_tree), "--out", str(out)]) == 0
    assert main(["data", "split", str(tiny_tree), "--out", str(out)]) == 2  # its own output, but no --force
    assert "--force" in capsys.readouterr().err
    assert main(["data", "split", str(tiny_tree), "--out", str(out), "--force", "--seed", "5"]) == 0
    assert (out / "train").is_dir() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


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


# ---------------------------------------------------------------- environment faults and interruptions
@pytest.mark.parametrize("errno_, words", [(30, "Read-only file system"), (28, "No space left on device")])
def test_split_onto_a_read_only_or_full_file_system_is_one_line_and_leaves_nothing(tiny_tree, tmp_path, monkeypatch,
                                                                                   capsys, errno_, words):
    out = tmp_path / "out"
    assert main(["data", "split", str(tiny_tree), "--out", str(out)]) == 0
    before = {p.relative_to(out): _sha(p) for p in out.rglob("*") if p.is_file()}
    real_copy, calls = shutil.copy2, {"n": 0}

    def failing_copy(src, dst):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno_, words, str(dst))
        return real_copy(src, dst)

    monkeypatch.setattr(folders.shutil, "copy2", failing_copy)
    capsys.readouterr()
    assert main(["data", "split", str(tiny_tree), "--out", str(out), "--force", "--seed", "9"]) == 2
    err = capsys.readouterr().err
    messages = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("edgetune")]  # not the progress bar
    assert len(messages) == 1 and words in messages[0] and "Traceback" not in err
    # The earlier split is untouched and nothing half-written is left beside it.
    assert {p.relative_to(out): _sha(p) for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tree"]


KILL_SCRIPT = """
import os, random, signal, subprocess, sys, time
src, out, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
for attempt in range(6):
    p = subprocess.Popen([sys.executable, "-m", "edgetune.cli", "data", "split", src, "--out", out, "--force"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(0.0, 2.5))
    p.send_signal(signal.SIGKILL)
    p.wait()
"""


def test_split_killed_at_random_moments_never_looks_complete_and_reruns(tmp_path):
    from edgetune.outputs import MARKER, is_complete

    src = make_image_tree(tmp_path / "src", classes=("a", "b", "c"), per_class=40, size=64)
    source = {p: _sha(p) for p in src.rglob("*")if p.is_file()}
    out = tmp_path / "out"
    for seed in range(3):
        subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(src), str(out), str(seed)], check=True, timeout=300)
        assert {p: _sha(p) for p in src.rglob("*") if p.is_file()} == source  # the source is byte-identical
        if out.exists():  # a split that exists is complete: every file of the source is there, verified
            assert is_complete(out, "split")
            copies = sorted(p.name for p in out.rglob("*.jpg"))
            assert copies == sorted(p.name for p in source if p.suffix == ".jpg")
        for leftover in tmp_path.glob(".out.*"):  # temporary trees are marked partial, never complete
            assert not is_complete(leftover) and (leftover / MARKER).exists()
    assert main(["data", "split", str(src), "--out", str(out), "--force"]) == 0
    assert is_complete(out, "split") and len(list(out.rglob("*.jpg"))) == 120
    assert list(tmp_path.glob(".out.*")) == []  # the rerun cleaned up what the killed runs left


NON_REGULAR_SCRIPT = """
import os, socket, sys
from pathlib import Path
from edgetune.runtime import find_images
from edgetune.train.datasets import content_digest
from edgetune.train.folders import scan_tree, split_folder
tree = Path(sys.argv[1])
os.mkfifo(tree / "cats" / "b.jpg")
s = socket.socket(socket.AF_UNIX)
s.bind(str(tree / "dogs" / "sock.png"))
os.symlink(tree / "nowhere.jpg", tree / "dogs" / "dangling.jpg")
report = scan_tree(tree)
assert sorted(p.name for p in report.not_regular) == ["b.jpg", "dangling.jpg", "sock.png"], report.not_regular
assert all(x.ok for items in report.classes.values() for x in items)
assert not any(p.endswith(("b.jpg", "sock.png")) for p in find_images([tree]))
counts = split_folder(tree, tree.parent / "split", 0.25, 0)
assert sum(a + b for a, b in counts.values()) == 24, counts
digest, n = content_digest(tree)
assert n == 24, n
print("OK")
"""


def test_fifos_sockets_and_dangling_links_are_skipped_with_a_warning_not_opened(tiny_tree):
    r = subprocess.run([sys.executable, "-c", NON_REGULAR_SCRIPT, str(tiny_tree)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr
    assert r.stderr.count("not a regular file") >= 3 and "b.jpg" in r.stderr  # scan, find_images, split, digest


def _bomb_png(path: Path, side: int = 20000) -> None:
    """A small PNG that declares side x side pixels (400 MP for 20000): Pillow refuses it as a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z = zlib.compressobj(9)
    row = b"\x00" * (1 + side // 8)  # filter byte + one bit per pixel
    data = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_decompression_bomb_in_training_data_is_skipped_with_a_message(tiny_tree, capsys):
    from edgetune.train.splits import make_splits

    _bomb_png(tiny_tree / "cats" / "bomb.png")
    assert (tiny_tree / "cats" / "bomb.png").stat().st_size < 200_000
    with pytest.warns(UserWarning, match=r"skipping 1 unreadable file\(s\):\n  .*bomb.png: .*decompression bomb"):
        splits = make_splits(tiny_tree, progress=False)
    assert [x.path.name for x in splits.skipped] == ["bomb.png"]
    assert all(s.path.name != "bomb.png" for part in (splits.train, splits.val, splits.test) for s in part)
    assert main(["data", "check", str(tiny_tree)]) == 1
    assert "unreadable: " in capsys.readouterr().out


def test_a_class_with_no_readable_suffix_names_what_it_found_and_what_is_supported(tiny_tree, capsys):
    from edgetune.train.splits import make_splits

    for p in (tiny_tree / "dogs").iterdir():
        p.rename(p.with_suffix(".heic"))
    (tiny_tree / "dogs" / "readme.txt").write_text("x")
    with pytest.raises(Exception, match=r"dogs: found \.heic \(12\), \.txt \(1\); edgetune reads \.jpg .*\.ppm"):
        make_splits(tiny_tree, progress=False)
    assert main(["data", "check", str(tiny_tree)]) == 1
    assert "empty class: dogs (found .heic (12), .txt (1); edgetune reads" in capsys.readouterr().out
