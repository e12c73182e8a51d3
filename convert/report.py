"""The export folder's bookkeeping: its marker, convert_report.json, the summary, and what is already done.

`convert_report.json` is rewritten after every preset with the rows so far (merged with the rows of
earlier converts of the same model whose files are still in place), so a convert that was interrupted
can be finished: `done_presets(run)` names the presets whose export is complete for the run's current
model.keras, and the pipeline converts the others only.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from edgetune import UserError
from edgetune._config import config_to_dict
from edgetune.contract import sha256_file, write_json_atomic

EXPORT = "export"
REPORT = "convert_report.json"
FLIPS_DIR = "flips"
REPORT_SCHEMA = 2
PLACED = ("ok", "inconclusive", "failed")
"""Row statuses whose model file was written (export/ or export/failed/)."""


@contextlib.contextmanager
def open_export(run: Path) -> Iterator[Path]:
    """RUN/export, created and marked as an edgetune export; refused when it exists without being ours.

    A file system that refuses the write (read-only, full, no permission) becomes one UserError line.
    """
    from edgetune.outputs import check_output, mark_output, output_kind

    export = run / EXPORT
    try:
        if export.is_dir() and output_kind(export) is None and any(export.iterdir()):
            raise UserError(f"{export} exists and edgetune did not make it (no edgetune marker): edgetune never "
                            "overwrites what it did not create; move it away and convert again")
        check_output(export, "export", force=True)
        mark_output(export, "export")
        for stale in export.glob(".*.tmp.*"):
            stale.unlink()  # leftovers of an interrupted conversion (temporary names never look complete)
        yield export
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EDQUOT, errno.EPERM):
            raise UserError(f"cannot write the export folder {export}: {exc.strerror} "
                            f"({exc.filename or export}); convert needs a writable run dir") from None
        raise


def order_rows(rows: Sequence[Any], presets: dict) -> list[Any]:
    """Rows in the registry's preset order."""
    order = {name: i for i, name in enumerate(presets)}
    return sorted(rows, key=lambda r: order.get(r.preset, len(order)))


def _earlier_rows(export: Path, model_sha: str, keep_out: set[str]) -> list[dict]:
    """Rows of earlier converts of the same model whose files are still where the report says."""
    try:
        old = json.loads((export / REPORT).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(old, dict) or old.get("model_sha256") != model_sha:
        return []
    return [r for r in old.get("rows", []) if isinstance(r, dict) and r.get("preset") not in keep_out
            and r.get("status") in PLACED and r.get("path") and Path(r["path"]).is_file()]


def write_report(export: Path, cfg: Any, inp: Any, rows: Sequence[Any]) -> Path:
    """Rewrite convert_report.json: this convert's rows plus the still-valid rows of earlier ones."""
    sha = sha256_file(inp.model_file)
    new = [dict(r.__dict__) for r in rows]
    merged = _earlier_rows(export, sha, {r["preset"] for r in new}) + new
    return write_json_atomic(export / REPORT, {
        "kind": "edgetune-convert", "schema": REPORT_SCHEMA, "model": str(inp.model_file), "model_sha256": sha,
        "heldout_images": len(inp.heldout_y), "heldout_splits": inp.heldout_splits, "config": config_to_dict(cfg),
        "done": sorted(r["preset"] for r in merged if r.get("status") in PLACED), "rows": merged})


def done_presets(run: str | os.PathLike) -> set[str]:
    """Presets of `run` whose export is complete for its current model.keras (passed, inconclusive or failed).

    The pipeline calls `convert_run` again with the other presets only (`ConvertConfig(preset=",".join(missing))`)
    to finish an interrupted convert; a retrained model.keras makes every earlier export stale (empty set).
    """
    run = Path(run)
    model = run / "model.keras"
    if not model.is_file():
        return set()
    return {r["preset"] for r in _earlier_rows(run / EXPORT, sha256_file(model), set())}


def problems(rows: Sequence[Any], max_drop: float) -> list[str]:
    """One line per preset that failed, was inconclusive or errored (reason first), and the no-integer line."""
    lines = [f"{r.preset}: {r.status}: {r.detail}" for r in rows if r.status != "ok"]
    integer = [r for r in rows if r.integer]
    if integer and not any(r.status == "ok" for r in integer):
        lines.insert(0, f"no integer model within the {max_drop:g}-point budget: "
                        f"{', '.join(r.preset for r in integer)} did not pass")
    return lines


def summary_table(rows: Sequence[Any]) -> str:
    """Markdown: preset, verdict, size, gzip size, n, agreement [95% CI], drop, max |Δp|, seconds."""
    lines = ["| preset | status | size KB | gzip KB | images | agreement (95% CI) | accuracy | drop points (95% CI) "
             "| max abs Δp | seconds |",
             "|---|---|---:|---:|---:|---|---:|---|---:|---:|"]
    for r in rows:
        p = r.parity
        if not p or p.get("agreement") is None:
            lines.append(f"| {r.preset} | {r.status} | | | | | | | | |")
            continue
        lo, hi = p["agreement_ci95"]
        dlo, dhi = p["drop_ci95"]
        lines.append(f"| {r.preset} | {r.status} | {r.size_bytes / 1024:.0f} | {r.gzip_bytes / 1024:.0f} | {p['n']} | "
                     f"{p['agreement'] * 100:.2f}% ({lo * 100:.1f}-{hi * 100:.1f}) | {p['accuracy'] * 100:.2f}% | "
                     f"{p['drop_points']:+.2f} ({dlo:+.2f} to {dhi:+.2f}) | {p['max_abs_dprob']:.4f} | {r.seconds:.1f} |")
    return "\n".join(lines)
