"""The two texts a bundle carries for the person at the Pi: install.sh and README.txt (standard library only)."""

from __future__ import annotations

INSTALL_SH = r"""#!/usr/bin/env bash
# Install edgetune from this bundle into a virtual environment, then run the bundled model once.
#
#   bash install.sh [VENV_DIR] [--camera] [--onnx]        # VENV_DIR defaults to ~/edgetune
#
#   --camera  Raspberry Pi camera: the venv also sees the system's picamera2 (--system-site-packages;
#             sudo apt install -y python3-picamera2), and keeps the system's numpy, which picamera2's
#             compiled parts were built against.
#   --onnx    also install ONNX Runtime (only needed for .onnx models).
#   PYTHON=python3.11 bash install.sh    picks the interpreter (default python3; 3.10 or newer).
#
# pip fetches numpy, Pillow, simplejpeg and ai-edge-litert for this machine from PyPI (internet needed) at the
# versions in requirements.txt. Every file is first checked against manifest.json. Written by
# `edgetune bundle`; running it again upgrades edgetune in the same venv.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HOME/edgetune"
CAMERA=0
ONNX=0
for arg in "$@"; do
    case "$arg" in
        --camera) CAMERA=1 ;;
        --onnx) ONNX=1 ;;
        -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}"; exit 0 ;;
        -*) echo "install.sh: unknown option $arg (see: bash install.sh --help)" >&2; exit 2 ;;
        *) VENV="$arg" ;;
    esac
done
PY="${PYTHON:-python3}"
say() { echo "[install.sh] $*" >&2; }
die() { echo "install.sh: error: $*" >&2; exit 1; }

command -v "$PY" >/dev/null || die "$PY not found: sudo apt install -y python3 python3-venv"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "edgetune needs Python 3.10 or newer; $PY is $("$PY" -V 2>&1)"
WHEEL="$HERE/wheels/@@WHEEL@@"
[ -f "$WHEEL" ] || die "$WHEEL is missing: copy the whole bundle folder again"

# 1. Every file against manifest.json, with the wheel's own code (standard library only: nothing is installed yet).
say "checking the bundle's files"
# From inside the bundle: `python -m` puts the current folder first on sys.path, and it must hold no edgetune/.
(cd "$HERE" && PYTHONPATH="$WHEEL" "$PY" -m edgetune.bundle "$HERE") || die "the bundle is incomplete or changed (above): copy it again"

# 2. The virtual environment: made, or reused when VENV_DIR already is one (never over other files).
if [ -e "$VENV" ] && [ ! -f "$VENV/pyvenv.cfg" ] && [ -n "$(ls -A "$VENV" 2>/dev/null)" ]; then
    die "$VENV exists and is not a virtual environment; name another folder: bash install.sh DIR"
fi
VENV_FLAGS=()
if [ "$CAMERA" = 1 ]; then
    VENV_FLAGS+=(--system-site-packages)
    "$PY" -c 'import picamera2' 2>/dev/null \
        || say "note: picamera2 is not installed system-wide; for the camera: sudo apt install -y python3-picamera2"
fi
if [ -x "$VENV/bin/python" ] && [ -f "$VENV/pyvenv.cfg" ]; then
    # Reused with its own Python (re-running venv with another interpreter would mix two standard libraries).
    say "virtual environment: $VENV (exists: reused, edgetune upgraded in it)"
    if [ "$CAMERA" = 1 ]; then
        sed -i 's/^include-system-site-packages *=.*/include-system-site-packages = true/' "$VENV/pyvenv.cfg"
    fi
else
    say "virtual environment: $VENV"
    "$PY" -m venv ${VENV_FLAGS[@]+"${VENV_FLAGS[@]}"} "$VENV" \
        || die "could not create $VENV (on Debian / Raspberry Pi OS: sudo apt install -y python3-venv)"
fi

# 3. The dependencies at the versions the model was benchmarked with, then this edgetune build itself.
BASE="$HERE/requirements.txt"
SYSTEM_NUMPY=0
if [ "$CAMERA" = 1 ] && "$PY" -c 'import numpy' 2>/dev/null; then
    SYSTEM_NUMPY=1
    grep -v '^numpy==' "$HERE/requirements.txt" > "$VENV/edgetune-requirements.txt"
    BASE="$VENV/edgetune-requirements.txt"
fi
REQS=(-r "$BASE")
[ "$ONNX" = 1 ] && REQS+=(-r "$HERE/requirements-onnx.txt")
if [ "$CAMERA" = 1 ] && [ -f "$HERE/requirements-camera.txt" ]; then
    if [ "$SYSTEM_NUMPY" = 1 ]; then
        # pip's OpenCV wheels pin their own numpy (opencv 5 needs numpy 2), which would shadow the system numpy
        # picamera2 is compiled against: USB cameras then use the system's OpenCV instead.
        "$PY" -c 'import cv2' 2>/dev/null \
            || say "note: for USB cameras and videos too: sudo apt install -y python3-opencv (pip's OpenCV would replace the system numpy)"
    else
        REQS+=(-r "$HERE/requirements-camera.txt")
    fi
fi
say "installing the dependencies (pip, from PyPI)"
"$VENV/bin/python" -m pip install --disable-pip-version-check --find-links "$HERE/wheels" "${REQS[@]}" \
    || die "pip could not install the dependencies (above): the Pi needs internet access to PyPI"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps --force-reinstall "$WHEEL"

# 4. The installed command runs the bundled model.
SMOKE_MODEL="@@SMOKE_MODEL@@"
SMOKE_IMAGE="@@SMOKE_IMAGE@@"
if [ -n "$SMOKE_IMAGE" ]; then
    "$VENV/bin/edgetune" predict "$HERE/$SMOKE_MODEL" "$HERE/$SMOKE_IMAGE" || die "the installed edgetune could not run $SMOKE_MODEL"
else
    (cd "$HERE" && "$VENV/bin/python" -c 'import sys; from edgetune.runtime import Predictor; Predictor.from_path(sys.argv[1])' \
        "$HERE/$SMOKE_MODEL") || die "the installed edgetune could not load $SMOKE_MODEL"
fi
say "done: $("$VENV/bin/edgetune" --version) in $VENV"
echo "next: source $VENV/bin/activate && cd $HERE   (the commands are in README.txt)"
"""

README_TXT = """\
edgetune bundle of {run_name}: the model, its contract and edgetune itself, for a Raspberry Pi
Made {created} by edgetune {version} on {host}.

Model:  {models}
Why:    {reason}
Labels: {labels}
{images_line}
1. Copy this folder to the Pi (from the machine that made it):
     rsync -a {out}/ pi@raspberrypi.local:{out_name}/
   or   scp -r {out} pi@raspberrypi.local:

2. Install on the Pi (Raspberry Pi OS 64-bit or any Linux with Python 3.10+; pip needs internet):
     cd ~/{out_name}
     bash install.sh                  # checks every file, makes the venv ~/edgetune, installs, runs the model once
     bash install.sh --camera         # for a Pi camera: the venv also sees the system's picamera2
     bash install.sh --onnx           # for .onnx models (ONNX Runtime)
     source ~/edgetune/bin/activate
   Check a copy at any time:  edgetune bundle --verify .

3. Classify images:
     edgetune predict {model} {predict_target} --top-k 1

4. Benchmark on the Pi, into a results JSON for `edgetune compare`:
     {bench_cmd}
   then merge it with the training machine's results (copy it back, or compare here):
     edgetune compare {compare_inputs} --out ~/edgetune-compare
{stream_block}"""

STREAM_BLOCK = """
5. Live from a camera or a video (newest frame wins; cameras need: bash install.sh --camera):
     edgetune stream picamera {model}          # the Raspberry Pi camera module (picamera2)
     edgetune stream 0 {model}                 # a USB camera; or a video file, an rtsp:// URL
     edgetune stream {replay} {model} --fps 5    # replay images at 5 frames/s
   (all sources and flags: edgetune stream --help)
"""
