#!/usr/bin/env bash
# Raspberry Pi (aarch64) check under emulation: install the aarch64 wheels of the lean runtime into an
# emulated Debian bookworm (= Raspberry Pi OS 64-bit) Python 3.11 and run the committed fixture models,
# (PI_SUITE=trixie: Debian 13 / Pi OS trixie with Python 3.13)
# comparing with the x86-64 reference outputs (tests/fixtures/reference_x86_64.json).
#
#   sudo scripts/pi_check.sh            # about 1.5-3 minutes the first time, faster with the cache
#
# Needs: root (apt-get for qemu-user-static, `unshare -m` + a tmpfs mount), apt access to the Debian
# arm64 archive and PyPI. Set PI_CHECK_DIR to keep the sysroot and wheels somewhere else
# (default /tmp/edgetune-pi-check; reused when present). Exit code 0 when every comparison passes.
#
# Method (see DESIGN.md "Raspberry Pi (aarch64) check under emulation"):
#   1. qemu-user-static runs aarch64 binaries: qemu-aarch64-static -L ROOT ROOT/usr/bin/python3.11.
#   2. The arm64 Python userland comes from .debs fetched by a private apt config and unpacked with
#      dpkg -x (no debootstrap, no chroot).
#   3. Wheels are fetched for the Pi's platform tags (glibc 2.36 = bookworm) with pip --platform;
#      edgetune itself is installed from a wheel built from this checkout, without extras + onnxruntime.
#   4. Trap: under qemu, onnxruntime segfaults on import and LiteRT on its first inference when they
#      read the host's /sys/devices/system/cpu; an empty tmpfs over it (private mount namespace) fixes it.
#   5. The bundle (PI_BUNDLE=0 skips it): `edgetune bundle` of a run around the fixture models on the host,
#      then, as on a Pi, the bundle's own `bash install.sh` (venv, pip from PyPI, all emulated) and
#      `edgetune predict` + `edgetune bench` from that venv. Programs run as aarch64 binaries through a
#      binfmt_misc entry registered in a private user namespace (Linux 6.7+), so install.sh, pip and the
#      venv's python run unchanged; slow (pip under emulation: several minutes).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${PI_CHECK_DIR:-/tmp/edgetune-pi-check}"
SUITE="${PI_SUITE:-bookworm}"
case "$SUITE" in
    bookworm) PYV=3.11; GLIBC_MINOR=36 ;;
    trixie) PYV=3.13; GLIBC_MINOR=41 ;;
    *) echo "pi_check: PI_SUITE must be bookworm or trixie" >&2; exit 2 ;;
esac
WORK="$WORK/$SUITE"
ROOTFS="$WORK/rootfs"
SITE="$WORK/site"
PY_HOST="${PYTHON:-python3}"
[ -x "$REPO/.venv/bin/python" ] && PY_HOST="$REPO/.venv/bin/python"
T0=$(date +%s)
say() { echo "[pi_check $(( $(date +%s) - T0 ))s] $*" >&2; }

if [ "$(id -u)" != 0 ]; then echo "pi_check: needs root (apt-get, unshare -m, mount)" >&2; exit 77; fi
if ! command -v qemu-aarch64-static >/dev/null; then
    say "installing qemu-user-static"
    apt-get install -y -qq qemu-user-static >/dev/null
fi
mkdir -p "$WORK"

# --- 2. arm64 Python userland from Debian ---------------------------------------------------------
if [ ! -x "$ROOTFS/usr/bin/python$PYV" ]; then
    say "fetching arm64 python$PYV .debs ($SUITE)"
    APT_DIR="$WORK/apt"
    mkdir -p "$APT_DIR/state/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/etc/preferences.d"
    : > "$APT_DIR/state/status"
    echo "deb [arch=arm64] http://deb.debian.org/debian $SUITE main" > "$APT_DIR/sources.list"
    cat > "$APT_DIR/apt.conf" <<EOF
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
Dir::State "$APT_DIR/state";
Dir::State::status "$APT_DIR/state/status";
Dir::Cache "$APT_DIR/cache";
Dir::Etc::SourceList "$APT_DIR/sources.list";
Dir::Etc::SourceParts "/nonexistent";
Dir::Etc::Preferences "$APT_DIR/etc/preferences";
Dir::Etc::PreferencesParts "$APT_DIR/etc/preferences.d";
APT::Install-Recommends "false";
EOF
    export APT_CONFIG="$APT_DIR/apt.conf"
    apt-get update -qq >/dev/null
    apt-get install -y -qq --download-only "python$PYV" "python$PYV-venv" libstdc++6 libgcc-s1 >/dev/null
    unset APT_CONFIG
    rm -rf "$ROOTFS.tmp" && mkdir -p "$ROOTFS.tmp"
    for deb in "$APT_DIR"/cache/archives/*.deb; do dpkg -x "$deb" "$ROOTFS.tmp"; done
    # Merged /usr (trixie): the /lib -> usr/lib links come from base-files, which is not unpacked.
    for d in bin lib sbin; do
        if [ ! -e "$ROOTFS.tmp/$d" ] && [ -d "$ROOTFS.tmp/usr/$d" ]; then ln -s "usr/$d" "$ROOTFS.tmp/$d"; fi
    done
    mv "$ROOTFS.tmp" "$ROOTFS"
fi

# --- 3. aarch64 wheels for the Pi's platform (glibc 2.36); edgetune itself rebuilt from this checkout ----
say "building the edgetune wheel from $REPO"
rm -rf "$WORK/dist" "$WORK/app" && mkdir -p "$WORK/dist"
"$PY_HOST" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" "$REPO" >/dev/null 2>&1
WHEEL="$(ls "$WORK"/dist/edgetune-*.whl)"
# The cached wheels are reused only for the same requirement list (a new dependency refetches them).
REQS="$("$PY_HOST" -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); m = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")][0]; print(sorted(l for l in z.read(m).decode().splitlines() if l.startswith("Requires-Dist")))' "$WHEEL")"
if [ ! -f "$SITE/.complete" ] || [ "$(cat "$SITE/.complete")" != "$REQS" ]; then
    say "fetching aarch64 wheels (edgetune's base dependencies + the [onnx] extra)"
    rm -rf "$SITE"
    PLAT=()
    for v in $(seq 17 $GLIBC_MINOR); do PLAT+=(--platform "manylinux_2_${v}_aarch64"); done
    PLAT+=(--platform manylinux2014_aarch64)
    "$PY_HOST" -m pip install -q --target "$SITE" --only-binary=:all: --python-version "$PYV" --implementation cp \
        --abi "cp${PYV/./}" "${PLAT[@]}" "$WHEEL[onnx]"
    rm -rf "$SITE"/edgetune "$SITE"/edgetune-*.dist-info  # the checkout's code goes in app/ on every run
    printf '%s' "$REQS" > "$SITE/.complete"
fi
"$PY_HOST" -m pip install -q --no-deps --target "$WORK/app" "$WHEEL" >/dev/null
"$PY_HOST" - "$SITE" <<'EOF'
import sys, pathlib
site = pathlib.Path(sys.argv[1])
for d in sorted(site.glob("*.dist-info")):
    print("  aarch64 wheel:", d.name[:-len(".dist-info")], file=sys.stderr)
EOF

# --- 4. run under qemu with an empty /sys/devices/system/cpu ---------------------------------------
PYARM="qemu-aarch64-static -L $ROOTFS $ROOTFS/usr/bin/python$PYV"
OUT="$WORK/reference_aarch64.json"
say "running the fixture models under emulated aarch64"
cd "$REPO"
set +e
unshare -m sh -c "mount -t tmpfs none /sys/devices/system/cpu && \
    PYTHONPATH='$WORK/app:$SITE' PYTHONDONTWRITEBYTECODE=1 $PYARM -c 'import platform; print(\"emulated:\", platform.machine(), platform.python_version())' && \
    PYTHONPATH='$WORK/app:$SITE' PYTHONDONTWRITEBYTECODE=1 $PYARM scripts/pi_reference.py --out '$OUT' \
        --compare tests/fixtures/reference_x86_64.json && \
    cd '$WORK' && PYTHONPATH='$WORK/app:$SITE' PYTHONDONTWRITEBYTECODE=1 $PYARM -m edgetune.cli predict \
        '$REPO/tests/fixtures/models/tiny3_int8.tflite' '$REPO/tests/fixtures/images' --top-k 1 > '$WORK/predict_aarch64.txt'"
RC=$?
set -e
if [ $RC = 0 ]; then
    "$PY_HOST" -m edgetune.cli predict "$REPO/tests/fixtures/models/tiny3_int8.tflite" "$REPO/tests/fixtures/images" --top-k 1 \
        > "$WORK/predict_x86_64.txt" 2>/dev/null || true
    # The CLI prints probabilities to 4 digits; compare labels (top-1) only, which must agree.
    if diff <(sed 's/ (.*//' "$WORK/predict_x86_64.txt") <(sed 's/ (.*//' "$WORK/predict_aarch64.txt") >/dev/null; then
        say "edgetune predict (aarch64) top-1 matches x86-64:"; sed 's/^/  /' "$WORK/predict_aarch64.txt" >&2
    else
        say "edgetune predict top-1 differs between x86-64 and aarch64"; RC=1
    fi
fi
# A real model too, when the shared assets are there: the ImageNet int8 MobileNetV2 must name the cat.
SRC="${EDGETUNE_SHARED_ASSETS:-$REPO/../shared/assets}/mobilenet_v2/source"
if [ $RC = 0 ] && [ -f "$SRC/tf2_mobilenet_v2_1.0_224_ptq.tflite" ]; then
    say "ImageNet int8 MobileNetV2 (224 px) under emulation:"
    unshare -m sh -c "mount -t tmpfs none /sys/devices/system/cpu && cd '$WORK' && \
        PYTHONPATH='$WORK/app:$SITE' PYTHONDONTWRITEBYTECODE=1 $PYARM -m edgetune.cli predict \
        '$SRC/tf2_mobilenet_v2_1.0_224_ptq.tflite' '$SRC/cat.bmp' '$SRC/grace_hopper.bmp' \
        --labels '$SRC/imagenet_labels.txt' --size 224" 2>/dev/null | tee "$WORK/imagenet_aarch64.txt" | sed 's/^/  /' >&2
    grep -q "cat.bmp: Egyptian cat" "$WORK/imagenet_aarch64.txt" || { say "expected Egyptian cat"; RC=1; }
fi

# --- 5. the bundle, installed and run as on a Pi --------------------------------------------------
if [ $RC = 0 ] && [ "${PI_BUNDLE:-1}" = 1 ]; then
    bash "$REPO/scripts/pi_check_bundle.sh" "$WORK" "$ROOTFS" "$PYV" "$PY_HOST" || RC=1
fi
say "done (exit $RC); outputs in $OUT"
exit $RC
