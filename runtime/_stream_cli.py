"""Classify what a camera sees, live: `edgetune stream SOURCE MODEL [--json] [--show] [--stats FILE]`.

SOURCE is a camera index (0) or device (/dev/video0), `picamera` (the Raspberry Pi camera module,
through picamera2), a video file, a stream URL (rtsp://, http://), or a folder or quoted glob of
images replayed at --fps. Capture, preprocessing and inference run in three threads; when the model
is slower than the source, the newest frame wins and older ones are dropped, so every decision is
about a recent frame. Each decision prints label, probability, fps and capture -> decision latency;
the end (source finished, --duration, --max-frames, Ctrl-C) prints the latency percentiles and the
processed and dropped frame counts. Cameras, videos and URLs need OpenCV: pip install 'edgetune[camera]'.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from edgetune._config import add_config_args, config_from_args, config_to_dict

WINDOW = "edgetune stream"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edgetune.runtime.config import StreamConfig

    parser.add_argument("source", help="camera index (0), /dev/videoN, picamera, a video file, a stream URL, "
                                       "or a folder / quoted glob of images")
    parser.add_argument("model", type=Path, help=".tflite or .onnx model (metadata JSON beside it)")
    add_config_args(parser, StreamConfig)


def run(args: argparse.Namespace) -> int:
    from edgetune.contract import write_json_atomic
    from edgetune.outputs import check_output_file
    from edgetune.runtime import Predictor
    from edgetune.runtime.config import StreamConfig
    from edgetune.runtime.sources import open_source
    from edgetune.runtime.stream import STATS_KIND, StreamRunner

    cfg = config_from_args(StreamConfig, args)
    cfg.validate()
    if cfg.stats is not None:  # refused before the camera opens, not after a long stream
        check_output_file(cfg.stats, STATS_KIND, inputs=[args.model])
    predictor = Predictor.from_path(args.model, threads=cfg.threads)
    display = Display() if cfg.show else None
    source = open_source(args.source, load_image=predictor.decode, fps=cfg.fps, resolution=cfg.resolution)
    runner = StreamRunner(source, predictor, _printer(cfg.json), every=cfg.every, min_confidence=cfg.min_confidence,
                          duration=cfg.duration, max_frames=cfg.max_frames)
    try:
        stats = runner.run(on_tick=(lambda: display.tick(runner)) if display else None, tick_s=0.03 if display else 0.1)
    finally:
        if display is not None:
            display.close()
    stats.model = str(args.model)
    stats.config = {"source_arg": args.source, **config_to_dict(cfg)}
    lines = stats.summary()
    if stats.failed:
        print(f"edgetune stream: error: {stats.stopped}", file=sys.stderr)
        lines = lines[1:]
    for line in lines:
        print(f"edgetune stream: {line}", file=sys.stderr)
    if cfg.stats is not None:
        write_json_atomic(cfg.stats, stats.to_dict())
        print(f"edgetune stream: statistics written to {cfg.stats}", file=sys.stderr)
    return 1 if stats.failed else 0


def _printer(json_lines: bool):
    def emit(d) -> None:
        if json_lines:
            row = asdict(d)
            for key, digits in (("time_s", 3), ("probability", 4), ("latency_ms", 2), ("fps", 2)):
                row[key] = round(row[key], digits)
            print(json.dumps(row), flush=True)
        else:
            print(f"frame {d.frame:>6}  {d.label}  {d.probability:.3f}  {d.fps:5.1f} fps  {d.latency_ms:6.1f} ms",
                  flush=True)

    return emit


class Display:
    """A window with the newest frame and its label, refreshed from the main thread (OpenCV HighGUI)."""

    def __init__(self) -> None:
        from edgetune import UserError
        from edgetune.runtime.sources import import_cv2

        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise UserError("--show needs a display and none is set (DISPLAY is empty): run it on the Pi's desktop, "
                            "use ssh -X, or leave out --show")
        cv2 = import_cv2()
        try:
            cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise UserError("--show needs OpenCV with GUI support and this one has none (opencv-python-headless): "
                            "pip install opencv-python, or leave out --show") from exc
        self.cv2 = cv2
        self._shown = None

    def tick(self, runner) -> bool:
        """Draw the newest decision; False when the user pressed q / Esc or closed the window."""
        cv2, latest = self.cv2, runner.latest
        if latest is not None and latest is not self._shown:
            frame, d = latest
            image = frame.image if frame.order == "BGR" else frame.image[..., ::-1]
            image = image.copy()  # drawn on: never touch the frame the pipeline holds
            cv2.putText(image, f"{d.label} {d.probability:.2f}  {d.fps:.1f} fps", (10, 30), cv2.FONT_HERSHEY_SIMPLEX,
                        0.8, (0, 255, 0), 2)
            cv2.imshow(WINDOW, image)
            self._shown = latest
        key = cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), 27) and cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        self.cv2.destroyAllWindows()
