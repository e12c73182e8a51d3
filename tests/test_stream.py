"""`edgetune stream` without a camera: an MP4 written from generated images, fake cameras, a picamera2 stand-in.

The int8 fixture model (tests/fixtures/models/tiny3_int8.tflite, 32x32, classes red/green/blue by the
colour of a bright blob) runs every stream; its labels are compared with `edgetune predict` on the
same frames decoded to PNG (MP4 is lossy, so the frames, not the source images, are the reference).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetune.cli import main
from edgetune.runtime import Predictor, load_and_preprocess
from edgetune.runtime import sources as sources_mod
from edgetune.runtime.sources import Frame, FrameSource, open_source
from edgetune.runtime.stream import STATS_KIND, LatestSlot, StreamRunner, frame_to_input

cv2 = pytest.importorskip("cv2")

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "tests" / "fixtures" / "models" / "tiny3_int8.tflite"
COLOURS = ((230, 40, 40), (40, 230, 40), (40, 40, 230))  # RGB: red, green, blue blobs


def blob_image(k: int, i: int, h: int = 72, w: int = 96) -> np.ndarray:
    """An RGB image whose class is the colour of its blob (k), on a noisy gradient that varies with i."""
    rng = np.random.default_rng(100 * k + i)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 120 / w, yy * 120 / h, np.full((h, w), 60.0)], -1) + rng.normal(0, 12, (h, w, 3))
    y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    img[y0:y0 + h // 2, x0:x0 + w // 2] = COLOURS[k]
    return np.clip(img, 0, 255).astype(np.uint8)


def write_video(path: Path, fourcc: str, fps: int, frames: int) -> Path:
    """A video of `frames` blob images cycling the three classes, written by OpenCV (BGR)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (96, 72))
    for i in range(frames):
        writer.write(cv2.cvtColor(blob_image(i % 3, i), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> tuple[Path, Path]:
    """(an MP4 of 45 frames cycling the three classes, a folder with every frame of it decoded to PNG)."""
    folder = tmp_path_factory.mktemp("video")
    path = write_video(folder / "clip.mp4", "mp4v", 30, 45)
    frames = folder / "frames"
    frames.mkdir()
    cap = cv2.VideoCapture(str(path))
    n = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).save(frames / f"{n:04d}.png")
        n += 1
    cap.release()
    assert n == 45
    return path, frames


def predict_labels(frames: Path, capsys) -> dict[int, tuple[str, float]]:
    """`edgetune predict --json` on the decoded frames: frame index -> (label, probability)."""
    assert main(["predict", str(MODEL), str(frames), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    return {int(Path(r["path"]).stem): (r["top"][0]["label"], r["top"][0]["probability"]) for r in doc["predictions"]}


def test_mp4_stream_labels_equal_predict_on_the_same_frames(video, tmp_path, capsys):
    path, frames = video
    expected = predict_labels(frames, capsys)
    assert len({label for label, _ in expected.values()}) == 3  # the model tells the frames apart
    stats_file = tmp_path / "stats.json"
    rc = main(["stream", str(path), str(MODEL), "--json", "--fps", "60", "--stats", str(stats_file)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    decisions = [json.loads(line) for line in out.splitlines()]
    assert len(decisions) >= 15
    for d in decisions:
        label, prob = expected[d["frame"]]
        assert d["label"] == label and d["probability"] == pytest.approx(prob, abs=1e-4), d
    assert "end of video after 45 frames" in err and "latency p50" in err
    stats = json.loads(stats_file.read_text())
    assert stats["kind"] == STATS_KIND and stats["frames_read"] == 45 and stats["processed"] == len(decisions)
    assert set(stats["latency_ms"]) >= {"p50", "p99"} and 0 < stats["latency_ms"]["p50"] <= stats["latency_ms"]["p99"]
    assert isinstance(stats["dropped"], int) and stats["dropped"] >= 0
    assert stats["captured"] == stats["processed"] + stats["dropped"] + stats["unfinished"]


def test_bgr_frames_preprocess_exactly_like_files(video):
    """A BGR video frame through the stream's preprocessing equals the PNG of that frame through predict's."""
    path, frames = video
    p = Predictor.from_path(MODEL)
    cap = cv2.VideoCapture(str(path))
    for n in range(5):
        ok, bgr = cap.read()
        assert ok
        ours = frame_to_input(bgr, "BGR", p.size)
        ref = load_and_preprocess(frames / f"{n:04d}.png", p.size)
        assert ours.dtype == ref.dtype and np.abs(ours - ref).max() == 0
        big = frame_to_input(bgr, "BGR", (200, 150))  # upscaling too
        assert np.abs(big - load_and_preprocess(frames / f"{n:04d}.png", (200, 150))).max() == 0
    cap.release()


class FakeCapture:
    """cv2.VideoCapture stand-in: `frames` good reads, then failures; reports `count` frames."""

    def __init__(self, frames: int, count: float = 0.0, opened: bool = True):
        self.frames, self.count, self.opened, self.reads, self.released = frames, count, opened, 0, False

    def isOpened(self):
        return self.opened

    def set(self, prop, value):
        return True

    def get(self, prop):
        return self.count if prop == cv2.CAP_PROP_FRAME_COUNT else 30.0

    def read(self):
        self.reads += 1
        if self.reads > self.frames:
            return False, None
        return True, cv2.cvtColor(blob_image(self.reads % 3, self.reads), cv2.COLOR_RGB2BGR)

    def release(self):
        self.released = True


def run_source(source: FrameSource, **kw):
    decisions = []
    runner = StreamRunner(source, Predictor.from_path(MODEL), decisions.append, **kw)
    return runner.run(), decisions


def test_camera_that_disappears_mid_stream_says_so(monkeypatch):
    monkeypatch.setattr(sources_mod, "LOST_AFTER_S", 0.2)
    fake = FakeCapture(frames=12)
    src = sources_mod.OpenCVSource(0, live=True, capture_factory=lambda target: fake)
    stats, decisions = run_source(src)
    assert stats.failed and "camera 0 stopped delivering frames after 12 frames" in stats.stopped
    assert stats.frames_read == 12 and decisions and fake.released


def test_video_that_ends_early_says_so(tmp_path, capsys):
    good = write_video(tmp_path / "v.avi", "MJPG", 25, 40)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    rc = main(["stream", str(cut), str(MODEL), "--fps", "0"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "error:" in err and "frames: the rest could not be decoded (truncated file?)" in err
    assert main(["stream", str(good), str(MODEL), "--fps", "0"]) == 0
    assert "end of video after 40 frames" in capsys.readouterr().err


@pytest.mark.parametrize("spec, message", [
    ("7", "cannot open camera 7"),
    ("/dev/video9", "cannot open camera /dev/video9"),
    ("missing_folder/clip.mp4", "no such file or folder"),
    ("nothing/*.jpg", "no images match"),
])
def test_sources_that_fail_to_open(spec, message, capsys):
    assert main(["stream", spec, str(MODEL)]) == 2
    err = capsys.readouterr().err
    assert f"edgetune stream: error: " in err and message in err and "Traceback" not in err


def test_not_a_video_and_a_camera_without_frames(tmp_path):
    junk = tmp_path / "notes.mp4"
    junk.write_text("not a video")
    with pytest.raises(Exception, match="cannot open video file"):
        open_source(str(junk), load_image=lambda p: None)
    with pytest.raises(Exception, match="delivered no frame: is it in use by another program"):
        sources_mod.OpenCVSource(0, live=True, capture_factory=lambda t: FakeCapture(frames=0))


class SyntheticCamera(FrameSource):
    """A fast live source (paced at `fps`) of RGB frames."""

    live = True

    def __init__(self, fps: float, frames: int = 10_000):
        self.fps, self.frames, self.name, self.n = fps, frames, "synthetic", 0
        self.images = [blob_image(k, 0) for k in range(3)]

    def read(self):
        if self.n >= self.frames:
            return None
        frame = Frame(self.images[self.n % 3], "RGB", self.n, time.perf_counter())
        self.n += 1
        return frame


class SlowModel:
    """A model that takes `seconds` per frame: the pipeline must drop frames, not queue them."""

    size, labels = (32, 32), ["red", "green", "blue"]

    def __init__(self, seconds: float):
        self.seconds = seconds

    def predict(self, batch):
        time.sleep(self.seconds)
        return np.array([[0.7, 0.2, 0.1]], np.float32)


def test_slow_model_drops_frames_instead_of_queueing():
    decisions = []
    runner = StreamRunner(SyntheticCamera(fps=200), SlowModel(0.04), decisions.append, duration=1.5)
    stats = runner.run()
    assert stats.stopped.startswith("--duration")
    # 200 frames/s in, ~25/s out: most frames are dropped ...
    assert stats.frames_read > 150 and stats.dropped > stats.processed > 10
    # ... and latency stays near one model call: a FIFO queue would grow it by ~0.9 s per second of
    # stream (200 in, 25 out), past 1 s by the end. Bounds are loose: the machine may be busy.
    lat = [d.latency_ms for d in decisions]
    assert max(lat) < 400 and np.median(lat[-5:]) < 200
    assert stats.captured == stats.processed + stats.dropped + stats.unfinished


def test_every_min_confidence_and_max_frames():
    decisions = []
    runner = StreamRunner(SyntheticCamera(fps=100, frames=60), SlowModel(0.0), decisions.append, every=3,
                          min_confidence=0.8, max_frames=5)
    stats = runner.run()
    assert stats.processed == 5 and stats.stopped == "--max-frames 5 reached"
    assert stats.below_confidence == 5 and decisions == []  # 0.7 < 0.8
    assert stats.skipped_every == stats.frames_read - stats.captured >= 8
    runner = StreamRunner(SyntheticCamera(fps=100, frames=30), SlowModel(0.0), decisions.append, every=3)
    stats = runner.run()
    assert stats.captured == 10 and stats.processed == len(decisions) >= 1
    assert all(d.frame % 3 == 0 for d in decisions)


def test_latest_slot_keeps_the_newest_and_counts_drops():
    slot = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.get() == 4 and slot.dropped == 4
    slot.put(9)
    slot.close(discard=True)
    assert slot.get() is None and slot.discarded == 1
    slot.put(10)  # after a stop: thrown away, never handed out
    assert slot.get() is None and slot.discarded == 2


class FakePicamera2:
    """Stand-in for picamera2.Picamera2: RGB888 arrays hold B, G, R (picamera2 manual, "Image formats")."""

    instances: list = []

    def __init__(self):
        self.config, self.started, self.closed, self.captures = None, False, False, 0
        FakePicamera2.instances.append(self)

    def create_preview_configuration(self, main=None, **kw):
        return {"main": dict(main or {}), "kind": "preview"}

    def configure(self, config):
        self.config = config

    def start(self):
        self.started = True

    def capture_array(self, name="main"):
        self.captures += 1
        w, h = self.config["main"]["size"]
        rgb = blob_image(0, self.captures, h, w)  # a red blob
        return np.ascontiguousarray(rgb[..., ::-1])  # the bytes picamera2 delivers for "RGB888"

    def stop(self):
        self.started = False

    def close(self):
        self.closed = True


def test_picamera2_stand_in(monkeypatch):
    module = type(sys)("picamera2")
    module.Picamera2 = FakePicamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)
    FakePicamera2.instances.clear()
    src = open_source("picamera", load_image=lambda p: None, resolution="96x72")
    cam = FakePicamera2.instances[0]
    assert cam.config["main"] == {"format": "RGB888", "size": (96, 72)} and cam.started
    stats, decisions = run_source(src, max_frames=6)
    assert stats.processed == 6 and cam.closed
    assert {d.label for d in decisions} == {"red"}  # read as RGB, the red blob would look blue
    p = Predictor.from_path(MODEL)
    rgb = blob_image(0, 1, 72, 96)

    def label(x):
        return p.labels[int(np.argmax(p.predict(x)[0]))]

    assert label(frame_to_input(rgb, "RGB", p.size)) == "red"
    assert label(frame_to_input(rgb, "BGR", p.size)) == "blue"  # the mistake the channel order guards against


def test_picamera_missing_or_failing(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails
    with pytest.raises(Exception, match="sudo apt install python3-picamera2"):
        open_source("picamera", load_image=lambda p: None)

    class NoCamera:
        def __init__(self):
            raise IndexError("list index out of range")

    module = type(sys)("picamera2")
    module.Picamera2 = NoCamera
    monkeypatch.setitem(sys.modules, "picamera2", module)
    with pytest.raises(Exception, match="cannot open the Pi camera .*list index out of range"):
        open_source("picamera2", load_image=lambda p: None)


def test_missing_opencv_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cv2", None)
    assert main(["stream", "0", str(MODEL)]) == 2
    assert "pip install 'edgetune[camera]'" in capsys.readouterr().err


def test_folder_streams_without_opencv_and_runtime_never_imports_it(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(blob_image(k, 0)).save(folder / f"{k}.png")
    code = ("import sys; sys.modules['cv2'] = None\n"
            "import edgetune.runtime, edgetune.runtime.stream\n"
            "from edgetune.cli import main\n"
            f"rc = main(['stream', {str(folder)!r}, {str(MODEL)!r}, '--fps', '20', '--json'])\n"
            "assert rc == 0, rc\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["label"] for line in r.stdout.splitlines()] == ["red", "green", "blue"]
    r = subprocess.run([sys.executable, "-c", "import edgetune.runtime, edgetune.runtime.stream, sys; "
                        "assert 'cv2' not in sys.modules and 'picamera2' not in sys.modules"], timeout=60)
    assert r.returncode == 0


def test_stats_file_is_never_a_foreign_file(tmp_path, capsys):
    foreign = tmp_path / "notes.json"
    foreign.write_text('{"mine": true}')
    assert main(["stream", str(ROOT / "tests" / "fixtures" / "images"), str(MODEL), "--fps", "0",
                 "--stats", str(foreign)]) == 2
    assert "not an edgetune" in capsys.readouterr().err and foreign.read_text() == '{"mine": true}'
    own = tmp_path / "stats.json"
    for _ in range(2):  # the second run replaces its own stats file
        assert main(["stream", str(ROOT / "tests" / "fixtures" / "images"), str(MODEL), "--fps", "0",
                     "--stats", str(own)]) == 0
    assert json.loads(own.read_text())["kind"] == STATS_KIND


def test_show_without_a_display(monkeypatch, capsys, video):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["stream", str(video[0]), str(MODEL), "--show"]) == 2
    assert "--show needs a display" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--every", "0"], "--every must be >= 1"),
    (["--min-confidence", "1.5"], "--min-confidence must be within 0..1"),
    (["--duration", "0"], "--duration must be > 0"),
    (["--resolution", "wide"], "expected WIDTHxHEIGHT"),
])
def test_bad_flags(flags, message, video, capsys):
    assert main(["stream", str(video[0]), str(MODEL), *flags]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT semantics")
def test_ctrl_c_stops_cleanly_with_the_summary(tmp_path):
    stats = tmp_path / "stats.json"
    # 60 frames at 2 fps: the source lasts 30 s, so on a loaded machine the Ctrl-C still lands before it ends
    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(60):
        shutil.copy(ROOT / "tests" / "fixtures" / "images" / "img0.jpg", frames / f"f{k:02d}.jpg")
    # A shell's background job (nohup, CI runners) starts with SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: give the child the default disposition, as a terminal would.
    proc = subprocess.Popen([sys.executable, "-m", "edgetune.cli", "stream", str(frames),
                             str(MODEL), "--fps", "2", "--stats", str(stats)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = proc.stdout.readline()  # the first decision: the stream is running
    assert first.startswith("frame")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped: interrupted (Ctrl-C)" in err and "latency p50" in err and "Traceback" not in err
    assert json.loads(stats.read_text())["stopped"] == "interrupted (Ctrl-C)"
