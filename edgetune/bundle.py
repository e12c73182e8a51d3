"""`edgetune bundle`: one folder that takes a trained model to a Raspberry Pi and installs edgetune there.

    RUN_DIR --bundle--> BUNDLE/
        README.txt              the exact commands: copy, install, predict, bench, stream
        install.sh              bash install.sh [VENV_DIR] [--camera] [--onnx]: a venv (default ~/edgetune) + the wheel
        wheels/edgetune-*.whl   built from the installed source by pip; pure Python, so one wheel for x86-64 and aarch64
        requirements.txt        the lean runtime's dependencies, pinned to the versions this machine runs
        requirements-<extra>.txt   the optional extras a Pi may want (onnx, camera, ...)
        export/<preset>.*       the chosen model(s), each with its metadata JSON (the contract)
        labels.txt, metadata.json, splits/, reference/, images/
                                the held-out images and the Keras reference, so that `edgetune bench` on the Pi
                                measures parity on the same images as on the workstation
        results/<device>.json   the bench results the model was chosen from, for `edgetune compare`
        manifest.json           every file with its size and sha256: `edgetune bundle --verify BUNDLE`

The bundle is written under a temporary name and renamed when complete (`edgetune.outputs.staged_output`).
Standard library only: install.sh runs the verification from the wheel itself (`python3 -m edgetune.bundle
BUNDLE`) before anything is installed on the Pi.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetune import UserError, __version__
from edgetune._config import opt
from edgetune.contract import ContractError, metadata_path_for, read_metadata, sha256_file

MANIFEST = "manifest.json"
MANIFEST_KIND = "edgetune-bundle"
MANIFEST_SCHEMA = 1
MODEL_SUFFIXES = (".tflite", ".onnx")
DEFAULT_PRESET = "tflite_int8"
SPLITS = ("heldout", "val", "test", "none")
NOT_LISTED = (MANIFEST, ".edgetune-output.json")
"""Files a bundle holds that the manifest cannot list: itself, and the output marker written at the rename."""


@dataclass
class BundleConfig:
    """`edgetune bundle`: the model, its contract and the edgetune wheel in one folder for a Raspberry Pi."""

    run: Path | None = opt("the run dir whose export/ models are bundled", None, cli=False)
    out: Path | None = opt("bundle folder to write (default: RUN_DIR-bundle beside the run dir)", None)
    preset: str | None = opt("models to bundle: comma-separated presets (e.g. tflite_int8,onnx_fp32) or all "
                             "(default: the recommended model of the run's bench results, else tflite_int8)", None)
    results: Path | None = opt("bench results JSON whose recommendation picks the model "
                               "(default: the newest of RUN_DIR/results/*.json, a Raspberry Pi's first)", None)
    split: str | None = opt("images that travel, with their Keras reference, for predict and parity on the Pi: "
                            "heldout, val, test or none (default: the split of the bench results, else test)",
                            None, choices=SPLITS)
    wheel: Path | None = opt("bundle this edgetune wheel instead of building one from the installed source", None)
    force: bool = opt("replace an existing bundle at --out (never a folder edgetune did not make)", False)
    verify: Path | None = opt("check a bundle folder against its manifest.json (e.g. on the Pi) instead of writing one", None)


@dataclass
class BundleSummary:
    """What `make_bundle` wrote."""

    out: Path
    models: list[str]
    reason: str
    split: str | None
    images: int
    files: int
    bytes: int
    wheel: str
    seconds: float


@dataclass
class VerifyReport:
    """A bundle checked against its manifest: missing and changed files fail it; extra files are only listed."""

    folder: Path
    checked: int = 0
    bytes: int = 0
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.changed


# ------------------------------------------------------------------ choosing what travels
def _exports(run: Path) -> dict[str, Path]:
    """{file name: path} of the run's placed exports (not failed/, not temporary files)."""
    export = run / "export"
    found = {p.name: p for p in sorted(export.iterdir()) if p.is_file() and p.suffix in MODEL_SUFFIXES
             and not p.name.startswith(".")} if export.is_dir() else {}
    if not found:
        raise UserError(f"{export} holds no .tflite/.onnx models: run `edgetune convert {run}` first")
    return found


def pick_results(run: Path, explicit: Path | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The bench results whose recommendation picks the model: `explicit`, else the newest of RUN/results/*.json.

    A Raspberry Pi's results win over a workstation's (the recommendation was measured where the model will run).
    Unreadable files are skipped with a note unless named explicitly.
    """
    from edgetune.benchmarks.results import read_results

    files = [Path(explicit)] if explicit else sorted((run / "results").glob("*.json"))
    docs = []
    for f in files:
        try:
            docs.append((f, read_results(f)))
        except ContractError as exc:
            if explicit:
                raise UserError(f"--results {exc}") from None
            print(f"edgetune bundle: note: skipping {f}: {exc}", file=sys.stderr)
    if not docs:
        return None
    pi = [d for d in docs if d[1]["device"].get("kind") == "pi"]
    return max(pi or docs, key=lambda d: str(d[1].get("created", "")))


def choose_models(run: Path, preset: str | None, results: tuple[Path, dict[str, Any]] | None) -> tuple[list[Path], str]:
    """(model files, why they were chosen) from --preset, the results' recommendation, or the default preset."""
    exports = _exports(run)
    by_stem = {Path(n).stem: p for n, p in exports.items()}
    if preset and preset.strip() == "all":
        return list(exports.values()), "every export of the run (--preset all)"
    if preset:
        names = [s.strip() for s in preset.split(",") if s.strip()]
        unknown = [n for n in names if n not in by_stem and n not in exports]
        if unknown or not names:
            raise UserError(f"--preset {preset!r}: {run}/export has no {unknown or 'model'}; it has: all, {', '.join(by_stem)}")
        return [by_stem.get(n) or exports[n] for n in dict.fromkeys(names)], f"--preset {preset}"
    if results is not None:
        path, doc = results
        rec = doc.get("recommendation") or {}
        budget = f"{doc.get('max_drop', 0.5):g}-point accuracy budget"
        for key in ("fastest", "smallest"):
            name = rec.get(key)
            if name in exports:
                return [exports[name]], f"the {key} model within the {budget} on {doc['device']['name']} ({path.name})"
            if name:
                print(f"edgetune bundle: note: {path.name} recommends {name}, which is not in {run}/export", file=sys.stderr)
        why = f"no model of {path.name} is within the {budget}"
    else:
        why = f"{run}/results/ has no bench results (run `edgetune bench {run}` to choose by measurement)"
    if DEFAULT_PRESET in by_stem:
        return [by_stem[DEFAULT_PRESET]], f"the default {DEFAULT_PRESET}: {why}"
    raise UserError(f"{why}, and the run has no {DEFAULT_PRESET} export: pass --preset NAME (one of: {', '.join(by_stem)})")


def _split_choice(requested: str | None, results: tuple[Path, dict[str, Any]] | None) -> str | None:
    if requested:
        return None if requested == "none" else requested
    split = (results[1].get("config") or {}).get("split") if results else None
    return split if split in SPLITS[:3] else "test"


def _split_files(run: Path, split: str) -> list[Path]:
    names = ("val", "test") if split == "heldout" else (split,)
    files = [run / "splits" / f"{s}.txt" for s in names if (run / "splits" / f"{s}.txt").is_file()]
    if not files:
        raise UserError(f"{run}/splits has no {' or '.join(n + '.txt' for n in names)}: pass --split none (or another split)")
    return files


def split_images(run: Path, split: str) -> list[tuple[Path, str]]:
    """(source file, path relative to the data root) of every image of a split, each checked to exist."""
    meta = read_metadata(run / "metadata.json")
    root = Path(meta.source.get("data_root", run))
    items, missing = [], []
    for f in _split_files(run, split):
        for line in f.read_text(encoding="utf-8").splitlines():
            rel = line.partition("\t")[0]
            if not rel.strip():
                continue
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise UserError(f"{f}: {rel!r} is not relative to the data root, so it cannot travel; pass --split none")
            (items if (root / rel).is_file() else missing).append((root / rel, rel))
    if missing:
        raise UserError(f"{len(missing)} images of the {split} split are missing (first: {missing[0][0]}): "
                        f"put the data set back at {root}, or pass --split none")
    return items


# ------------------------------------------------------------------ writing
def _copy(src: Path, dest: Path) -> None:
    """Copy the bytes only: the files get ordinary permissions (a run's 0600 temp-file modes would travel otherwise)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def _copy_run_files(tmp: Path, run: Path, models: list[Path], split: str | None, images: list[tuple[Path, str]]) -> bool:
    """Models with their contract, the run's metadata and labels, a split's files, images and reference.

    The layout is a run dir's (metadata.json, splits/, reference/, export/), so `edgetune bench BUNDLE
    --data-root BUNDLE/images` reads it as one. Returns whether a Keras reference travelled.
    """
    for m in models:
        _copy(m, tmp / "export" / m.name)
        _copy(metadata_path_for(m), tmp / "export" / metadata_path_for(m).name)
    for name in ("metadata.json", "labels.txt"):
        if (run / name).is_file():
            _copy(run / name, tmp / name)
    has_reference = False
    if split:
        for f in _split_files(run, split):
            _copy(f, tmp / "splits" / f.name)
        for src, rel in images:
            _copy(src, tmp / "images" / rel)
        for suffix in (".npy", ".json"):
            ref = run / "reference" / f"{split}_probs{suffix}"
            if ref.is_file():
                _copy(ref, tmp / "reference" / ref.name)
                has_reference = True
        has_reference = has_reference or _reference_from_heldout(run, split, tmp)
    return has_reference


def _reference_from_heldout(run: Path, split: str, tmp: Path) -> bool:
    """The val or test rows of the run's held-out reference (bench's default), stored for `split` in the bundle.

    Held-out rows are the val images, then the test images (`read_split`), so a split is a slice of them.
    """
    if split == "heldout" or not (run / "reference" / "heldout_probs.npy").is_file():
        return False
    from edgetune.benchmarks import read_reference, save_reference
    from edgetune.contract import read_split

    ref = read_reference(run, "heldout")  # checked against the run's split files and model
    n_val = len(read_split(run, "val")) if (run / "splits" / "val.txt").is_file() else 0
    save_reference(tmp, ref[0][:n_val] if split == "val" else ref[0][n_val:], split)
    return True


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_requirements(tmp: Path, reqs: dict[str, list[str]], wheel: str) -> None:
    head = f"# Dependencies of {wheel}, pinned to the versions the model was benchmarked with (written by edgetune bundle).\n"
    (tmp / "requirements.txt").write_text(head + "".join(r + "\n" for r in reqs[""]))
    for extra, lines in reqs.items():
        if extra:
            (tmp / f"requirements-{extra}.txt").write_text(
                f"# The [{extra}] extra of {wheel}: bash install.sh --{extra}\n" + "".join(r + "\n" for r in lines))


def _write_texts(tmp: Path, cfg: BundleConfig, out: Path, models: list[Path], reason: str, split: str | None,
                 images: list[tuple[Path, str]], has_reference: bool, wheel: str, results_name: str | None) -> None:
    """install.sh and README.txt, with this bundle's file names in them."""
    from edgetune._bundle_files import INSTALL_SH, README_TXT, STREAM_BLOCK
    from edgetune.cli import COMMANDS

    meta = read_metadata(cfg.run / "metadata.json")
    first = next((m for m in models if m.suffix == ".tflite"), models[0])
    model = f"export/{first.name}"
    smoke_image = f"images/{images[0][1]}" if images else ""
    (tmp / "install.sh").write_text(INSTALL_SH.replace("@@WHEEL@@", wheel).replace("@@SMOKE_MODEL@@", model)
                                    .replace("@@SMOKE_IMAGE@@", smoke_image))
    os.chmod(tmp / "install.sh", 0o755)
    if split:
        n = len(images)
        images_line = (f"Images: images/ holds the run's {split} split ({n} images)"
                       + (", and reference/ the Keras model's outputs on them.\n" if has_reference else
                          "; the run has no Keras reference for them (bench reports accuracy only).\n"))
        bench = f"edgetune bench . --split {split} --data-root images --threads 1,all"
    else:
        images_line = ""
        bench = f"edgetune bench {model} --threads 1,all --out results/$(hostname).json"
    compare = "results/*.json" if results_name else "results/$(hostname).json"
    text = README_TXT.format(
        run_name=cfg.run.name, created=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"), version=__version__,
        host=socket.gethostname(), models=", ".join(f"export/{m.name} (+ {metadata_path_for(m).name})" for m in models),
        reason=reason, labels=", ".join(meta.labels), images_line=images_line, out=out, out_name=out.name, model=model,
        predict_target="images" if split else "IMAGE_OR_FOLDER", bench_cmd=bench, compare_inputs=compare,
        stream_block=STREAM_BLOCK.format(model=model, replay="images" if split else "FOLDER") if "stream" in COMMANDS else "")
    (tmp / "README.txt").write_text(text)


def _bundle_files(folder: Path) -> list[str]:
    """Every regular file under `folder` as a POSIX relative path, except those the manifest cannot list."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            rel = (Path(dirpath) / name).relative_to(folder).as_posix()
            if rel not in NOT_LISTED:
                out.append(rel)
    return sorted(out)


def write_manifest(folder: Path, info: dict[str, Any]) -> dict[str, Any]:
    """List every file of `folder` with its size and sha256 in folder/manifest.json (written last)."""
    files = [{"path": rel, "size": (folder / rel).stat().st_size, "sha256": sha256_file(folder / rel)}
             for rel in _bundle_files(folder)]
    doc = {"kind": MANIFEST_KIND, "schema": MANIFEST_SCHEMA, "edgetune": __version__,
           "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **info, "files": files}
    (folder / MANIFEST).write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def make_bundle(cfg: BundleConfig) -> BundleSummary:
    """Write the bundle folder of a run: models + contract, images + reference, wheel, install.sh, README, manifest.

    Raises:
        UserError: A run without exports, an unknown preset, missing images, a refused --out, a failed wheel build.
    """
    from edgetune._bundle_wheel import build_wheel, check_wheel, pinned_requirements
    from edgetune.outputs import check_output, staged_output

    t0 = time.perf_counter()
    if cfg.run is None or not (Path(cfg.run) / "metadata.json").is_file():
        raise UserError(f"{cfg.run} is not an edgetune run dir (no metadata.json)")
    cfg.run = run = Path(cfg.run)
    results = pick_results(run, cfg.results)
    models, reason = choose_models(run, cfg.preset, results)
    for m in models:
        if not metadata_path_for(m).is_file():
            raise UserError(f"{m} has no metadata JSON beside it ({metadata_path_for(m).name}): re-run edgetune convert")
    split = _split_choice(cfg.split, results)
    images = split_images(run, split) if split else []
    data_root = read_metadata(run / "metadata.json").source.get("data_root")
    out = Path(cfg.out) if cfg.out else run.with_name(run.name + "-bundle")
    inputs = [run, data_root, cfg.wheel, cfg.results]
    check_output(out, "bundle", inputs=inputs, force=cfg.force)  # refused before the wheel build, not after
    with tempfile.TemporaryDirectory(prefix="edgetune-bundle-") as wtmp:
        wheel = Path(cfg.wheel) if cfg.wheel else build_wheel(Path(wtmp))
        if not wheel.is_file():
            raise UserError(f"--wheel {wheel} does not exist")
        check_wheel(wheel)
        reqs = pinned_requirements(wheel)
        with staged_output(out, "bundle", inputs=inputs, force=cfg.force) as tmp:
            os.chmod(tmp, 0o777 & ~_umask())  # a temporary folder is private (0700); the bundle is not
            _copy(wheel, tmp / "wheels" / wheel.name)
            has_reference = _copy_run_files(tmp, run, models, split, images)
            if results is not None:
                _copy(results[0], tmp / "results" / results[0].name)
            _write_requirements(tmp, reqs, wheel.name)
            _write_texts(tmp, cfg, out, models, reason, split, images, has_reference, wheel.name,
                         results[0].name if results else None)
            doc = write_manifest(tmp, {"run": str(run.resolve()), "models": [f"export/{m.name}" for m in models],
                                       "reason": reason, "split": split, "wheel": f"wheels/{wheel.name}"})
    return BundleSummary(out=out, models=[m.name for m in models], reason=reason, split=split, images=len(images),
                         files=len(doc["files"]), bytes=sum(f["size"] for f in doc["files"]), wheel=wheel.name,
                         seconds=time.perf_counter() - t0)


# ------------------------------------------------------------------ checking a copy
def verify_bundle(folder: str | os.PathLike) -> VerifyReport:
    """Check every file of a bundle against its manifest.json: which are missing, which changed.

    Raises:
        UserError: `folder` is not a bundle (no readable manifest.json of the right kind).
    """
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder")
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{manifest} is missing: not an edgetune bundle, or copied without it (copy the whole folder again)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{manifest} is not readable JSON ({exc}): copy the bundle again") from None
    if not isinstance(doc, dict) or doc.get("kind") != MANIFEST_KIND or not isinstance(doc.get("files"), list):
        raise UserError(f"{manifest} is not an edgetune bundle manifest")
    report = VerifyReport(folder=folder)
    listed = set()
    for entry in doc["files"]:
        rel = str(entry.get("path", ""))
        if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise UserError(f"{manifest}: file entry {rel!r} is not a path inside the bundle")
        listed.add(rel)
        path = folder / rel
        if not path.is_file():
            report.missing.append(rel)
            continue
        size = path.stat().st_size
        if size != entry.get("size"):
            report.changed.append(f"{rel} (size {entry.get('size')} -> {size} bytes)")
        elif sha256_file(path) != entry.get("sha256"):
            report.changed.append(f"{rel} (same size, different sha256)")
        else:
            report.checked += 1
            report.bytes += size
    report.extra = [rel for rel in _bundle_files(folder) if rel not in listed]
    return report


def verify_lines(report: VerifyReport) -> list[str]:
    """The report as the lines `edgetune bundle --verify` prints."""
    lines = [f"missing: {p}" for p in report.missing] + [f"changed: {p}" for p in report.changed]
    if report.extra:
        shown = ", ".join(report.extra[:5]) + (f" and {len(report.extra) - 5} more" if len(report.extra) > 5 else "")
        lines.append(f"note: {len(report.extra)} file(s) not in the manifest (added after bundling): {shown}")
    if report.ok:
        lines.append(f"ok: {report.checked} files ({report.bytes / 1e6:.1f} MB) match {report.folder / MANIFEST}")
    else:
        lines.append(f"{report.folder} is incomplete or changed: {len(report.missing)} missing, {len(report.changed)} "
                     "changed; copy the bundle again")
    return lines


def main(argv: list[str] | None = None) -> int:
    """`python -m edgetune.bundle BUNDLE`: verify a bundle with nothing but this file's package (install.sh uses it)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m edgetune.bundle BUNDLE_DIR   (checks every file against manifest.json)", file=sys.stderr)
        return 2
    try:
        report = verify_bundle(args[0])
    except UserError as exc:
        print(f"edgetune bundle: error: {exc}", file=sys.stderr)
        return 2
    for line in verify_lines(report):
        print(line, file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
