#!/usr/bin/env bash
# Step 5 of scripts/pi_check.sh: an `edgetune bundle` installed and run as on a Raspberry Pi, under emulation.
#
#   scripts/pi_check_bundle.sh WORK ROOTFS PYV PY_HOST      # called by pi_check.sh (root), after steps 1-4
#
# 1. On the host: a run dir around the committed fixture models (three colour classes, generated
#    images in a test split, a reference), then `edgetune bundle RUN --out WORK/bundle`.
# 2. In a private user + mount namespace: a binfmt_misc entry for qemu-aarch64, so aarch64 ELF files run
#    directly and install.sh, the venv's python and pip run unchanged; QEMU_LD_PREFIX=ROOTFS (the arm64
#    userland); an empty /sys/devices/system/cpu (LiteRT's trap, pi_check.sh step 4). binfmt_misc per
#    user namespace needs Linux 6.7+; on older kernels this step says SKIPPED and passes.
# 3. There: `bash install.sh VENV` on a fresh venv (pip fetches the aarch64 wheels of numpy, Pillow and
#    ai-edge-litert from PyPI), then `edgetune predict` and `edgetune bench` from that venv.
#    The predicted labels must equal the host's; bench must find the bundled Keras reference.
set -euo pipefail
WORK="$1"; ROOTFS="$2"; PYV="$3"; PY_HOST="$4"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
T0=$(date +%s)
say() { echo "[pi_check bundle $(( $(date +%s) - T0 ))s] $*" >&2; }

# ensurepip for the venv: the python3.X-venv package (caches made by an older pi_check.sh lack it)
if [ ! -f "$ROOTFS/usr/lib/python$PYV/ensurepip/__init__.py" ]; then
    say "fetching python$PYV-venv into the arm64 userland"
    APT_CONFIG="$WORK/apt/apt.conf" apt-get update -qq >/dev/null
    APT_CONFIG="$WORK/apt/apt.conf" apt-get install -y -qq --download-only "python$PYV-venv" >/dev/null
    for deb in "$WORK"/apt/cache/archives/*.deb; do dpkg -x "$deb" "$ROOTFS"; done
fi

RUN="$WORK/bundle-run"; BUNDLE="$WORK/bundle"; VENV="$WORK/bundle-venv"
rm -rf "$RUN" "$WORK/bundle-data" "$VENV"
say "edgetune bundle of a run around the fixture models (host)"
"$PY_HOST" - "$REPO" "$RUN" "$WORK/bundle-data" <<'EOF'
import shutil, sys
from pathlib import Path

import numpy as np
from PIL import Image

from edgetune.benchmarks import save_reference
from edgetune.contract import ModelMetadata, Preprocessing, write_metadata, write_split

repo, run, data = (Path(a) for a in sys.argv[1:4])
labels, items, rng = ["red", "green", "blue"], [], np.random.default_rng(0)
for k, name in enumerate(labels):  # the tiny3 nets classify by colour: a bright patch in channel k
    (data / name).mkdir(parents=True)
    for i in range(3):
        img = rng.integers(0, 90, (40, 40, 3), dtype=np.uint8)
        img[4 + 2 * i:30, 6:34 - i, k] = 240
        Image.fromarray(img).save(data / name / f"{i}.png")
        items.append((f"{name}/{i}.png", name))
write_split(run / "splits" / "test.txt", items)
write_metadata(run / "metadata.json", ModelMetadata(labels=labels, preprocessing=Preprocessing(size=(32, 32)),
                                                    output_kind="softmax_logits", source={"data_root": str(data)}))
(run / "labels.txt").write_text("\n".join(labels) + "\n")
(run / "export").mkdir()
for stem in ("tiny3_int8", "tiny3_fp32"):
    for f in (repo / "tests" / "fixtures" / "models").glob(stem + ".*"):
        shutil.copy(f, run / "export" / f.name)
save_reference(run, np.eye(3, dtype=np.float32)[[labels.index(label) for _, label in items]], "test")
EOF
"$PY_HOST" -m edgetune.cli bundle "$RUN" --out "$BUNDLE" --force --preset tiny3_int8,tiny3_fp32 --split test >&2

# As on the Pi: aarch64 programs through qemu via binfmt_misc, private to a new user namespace.
cat > "$WORK/as_pi.sh" <<'EOF'
#!/bin/sh
mount -t binfmt_misc none /proc/sys/fs/binfmt_misc 2>/dev/null || exit 77
printf '%s' ":qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:$QEMU:F" \
    > /proc/sys/fs/binfmt_misc/register || exit 77
mount -t tmpfs none /sys/devices/system/cpu || exit 77
exec "$@"
EOF
say "as on the Pi (emulated aarch64): bash install.sh into a fresh venv, edgetune predict, edgetune bench"
set +e
unshare -Urm env QEMU="$(command -v qemu-aarch64-static)" QEMU_LD_PREFIX="$ROOTFS" PYTHON="$ROOTFS/usr/bin/python$PYV" \
    BUNDLE="$BUNDLE" VENV="$VENV" WORK="$WORK" sh "$WORK/as_pi.sh" bash -c '
    set -e
    bash "$BUNDLE/install.sh" "$VENV" 2>&1 | grep -v "WARNING: Location" | tail -n 6
    cd "$WORK"  # not the checkout: python -c puts the current folder first on sys.path
    "$VENV/bin/python" -c "import platform, sys, edgetune; print(\"venv python:\", platform.machine(), platform.python_version(), edgetune.__file__); sys.exit(not edgetune.__file__.startswith(sys.prefix))"
    cd "$BUNDLE"
    "$VENV/bin/edgetune" predict export/tiny3_int8.tflite images --top-k 1 > "$WORK/bundle_predict_aarch64.txt"
    "$VENV/bin/edgetune" bench . --split test --data-root images --threads 1 --warmup 1 --min-runs 5 --min-time 0 \
        --no-isolate --no-e2e --no-raw --name pi-emulated --out "$WORK/bundle_bench_aarch64.json" > /dev/null' >&2
RC=$?
set -e
if [ $RC = 77 ]; then
    say "SKIPPED: this kernel cannot mount binfmt_misc in a user namespace (needs Linux 6.7+)"
    exit 0
fi
[ $RC = 0 ] || { say "FAILED: install.sh / predict / bench in the emulated Pi (exit $RC)"; exit 1; }

(cd "$BUNDLE" && "$PY_HOST" -m edgetune.cli predict export/tiny3_int8.tflite images --top-k 1 2>/dev/null) > "$WORK/bundle_predict_x86_64.txt"
if ! diff <(sed 's/ (.*//' "$WORK/bundle_predict_x86_64.txt") <(sed 's/ (.*//' "$WORK/bundle_predict_aarch64.txt") >&2; then
    say "FAILED: the bundle's labels differ between x86-64 and the emulated Pi"; exit 1
fi
"$PY_HOST" - "$WORK/bundle_bench_aarch64.json" <<'EOF' >&2
import json, sys
res = json.load(open(sys.argv[1]))
rows = {r["name"]: r for r in res["parity"]}
m = rows["tiny3_int8.tflite"]
assert "keras" in rows and m["n"] == 9 and m.get("agreement") is not None, rows
print(f"  bench on the emulated Pi ({res['device']['cpu'].get('arch')}): "
      f"tiny3_int8 agreement with the bundled reference {m['agreement']:.3f} on {m['n']} images")
EOF
say "bundle: install.sh + predict under emulated aarch64 match x86-64:"
sed 's/^/  /' "$WORK/bundle_predict_aarch64.txt" >&2
