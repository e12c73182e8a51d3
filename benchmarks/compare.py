"""`compare`: merge results JSONs from several devices into one table and plots (matplotlib, Agg).

Speed-ups are relative to a baseline row (default the Keras `model.predict` row) on the same
device and thread count: a Pi's int8 model is compared with the Pi's own baseline, never with a
workstation's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgetune import UserError
from edgetune.benchmarks.results import (KERAS_LABELS, check_baseline, environment_line, is_int8, markdown_report, md_table,
                                         read_results, recommend, row_label, _f, _ms)
from edgetune.outputs import staged_output


def merge_rows(results: Sequence[dict[str, Any]], baseline: str = "keras predict", threads: int | None = None) -> list[dict[str, Any]]:
    """One row per device and model at one thread count: size, accuracy, p50/p99, speed-up vs baseline.

    Args:
        results: Results documents (one per device; device names must differ).
        baseline: Row label the speed-up is relative to on each device.
        threads: Thread count to report; default each device's largest measured.

    Returns:
        Merged rows (dicts), ordered by device then by the order models appear in the results.
    """
    names = [r["device"]["name"] for r in results]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise UserError(f"several results come from the same device name {sorted(dupes)}: rename one with bench --name")
    rows = []
    for res in results:
        dev = res["device"]["name"]
        ts = sorted({r["threads"] for r in res["latency"] if r["status"] == "ok" and r["threads"]})
        t = threads if threads is not None else (ts[-1] if ts else None)
        parity = {p["name"]: p for p in res.get("parity", [])}
        sizes = {m["name"]: m for m in res["models"]}
        lat = [r for r in res["latency"] if r["threads"] == t and r["mode"] in ("predictor", "e2e", *KERAS_LABELS)]
        base = next((r for r in lat if row_label(r) == baseline and r["status"] == "ok"), None)
        for r in lat:
            p = parity.get(r["name"], {})
            m = sizes.get(r["name"], {})
            ok = r["status"] == "ok"
            rows.append({
                "device": dev, "device_kind": res["device"].get("kind"), "label": row_label(r), "name": r["name"],
                "mode": r["mode"], "format": r.get("format"), "preset": r.get("preset") or m.get("preset"),
                "threads": t, "status": r["status"], "note": r.get("note", ""),
                "size_bytes": m.get("size_bytes") or r.get("size_bytes"),
                "accuracy": p.get("accuracy"), "drop_points": p.get("drop_points"), "agreement": p.get("agreement"),
                "within_budget": p.get("within_budget"),
                "p50_ms": r.get("p50_ms") if ok else None, "p99_ms": r.get("p99_ms") if ok else None,
                "speedup": (base["p50_ms"] / r["p50_ms"]) if ok and base and r.get("p50_ms") else None,
                "int8": is_int8(m) if m else False,
            })
    return rows


def compare_table(rows: Sequence[dict[str, Any]], baseline: str) -> str:
    out = []
    for r in rows:
        speed = _f(r["speedup"], ".2f") + "×" if r["speedup"] else "-"
        out.append([r["device"], r["label"], r["threads"] or "-", _f(r["size_bytes"] / 1e6 if r["size_bytes"] else None),
                    _f(r["accuracy"], pct=True), _f(r["drop_points"], "+.2f"), _f(r["agreement"], pct=True),
                    _ms(r["p50_ms"]) if r["status"] == "ok" else r["status"], _ms(r["p99_ms"]), speed])
    return md_table(["device", "model", "threads", "MB", "accuracy", "drop (pts)", "agree", "p50 ms", "p99 ms",
                     f"× vs {baseline}"], out)


def plot_latency(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Grouped bars: p50 latency (p99 as the whisker) per model, one colour per device."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ok = [r for r in rows if r["status"] == "ok" and r["mode"] != "e2e" and r["p50_ms"]]
    labels = list(dict.fromkeys(r["label"] for r in ok))
    devices = list(dict.fromkeys(r["device"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(labels) + 2), 4.5))
    width = 0.8 / max(1, len(devices))
    for i, dev in enumerate(devices):
        by = {r["label"]: r for r in ok if r["device"] == dev}
        xs = np.arange(len(labels)) + i * width
        p50 = [by[lab]["p50_ms"] if lab in by else np.nan for lab in labels]
        err = [max(0.0, by[lab]["p99_ms"] - by[lab]["p50_ms"]) if lab in by else 0 for lab in labels]
        threads = next((r["threads"] for r in ok if r["device"] == dev), "?")
        ax.bar(xs, p50, width, yerr=[np.zeros(len(labels)), err], capsize=3, label=f"{dev} ({threads} threads)")
    ax.set_xticks(np.arange(len(labels)) + width * (len(devices) - 1) / 2)
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_ylabel("latency, ms (bar p50, whisker p99)")
    ax.set_yscale("log")
    ax.set_title("Batch-1 latency per format and device")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_tradeoff(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Accuracy vs p50 latency, marker area proportional to the model file size, one colour per device."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import ScalarFormatter

    pts = [r for r in rows if r["status"] == "ok" and r["mode"] in ("predictor", "keras_predict") and r["p50_ms"]
           and r["accuracy"] is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    devices = list(dict.fromkeys(r["device"] for r in rows))
    sizes = [r["size_bytes"] or 0 for r in pts]
    biggest = max(sizes) if sizes and max(sizes) > 0 else 1
    for k, dev in enumerate(devices):
        mine = [r for r in pts if r["device"] == dev]
        if not mine:
            continue
        ax.scatter([r["p50_ms"] for r in mine], [r["accuracy"] * 100 for r in mine],
                   s=[40 + 600 * (r["size_bytes"] or 0) / biggest for r in mine], alpha=0.6, label=dev, color=f"C{k}")
        for i, r in enumerate(sorted(mine, key=lambda r: r["p50_ms"])):
            mb = f"{r['size_bytes'] / 1e6:.1f} MB" if r["size_bytes"] else ""
            # Staggered offsets: formats with equal accuracy and close latency would print over each other.
            ax.annotate(f"{r['label']} {mb}", (r["p50_ms"], r["accuracy"] * 100), fontsize=7,
                        xytext=(6, 6 + 9 * (i % 3)), textcoords="offset points")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.margins(x=0.15, y=0.25)
    ax.set_xlabel("p50 latency, ms (log)")
    ax.set_ylabel("test accuracy, %")
    ax.set_title("Accuracy vs latency (marker area = file size)")
    if pts:
        ax.legend(fontsize=8, markerscale=0.4)
    else:
        ax.text(0.5, 0.5, "no accuracy data (no run dir / labelled images)", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plots(rows: Sequence[dict[str, Any]], out_dir: Path) -> tuple[list[Path], str]:
    """The two plots, or none and a note where matplotlib is missing (a Pi's lean install)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return [], "Plots need matplotlib (pip install matplotlib, or the [train] extra); the tables above hold the same numbers."
    return [plot_latency(rows, out_dir / "latency.png"), plot_tradeoff(rows, out_dir / "accuracy_latency_size.png")], ""


def compare_report(results: Sequence[dict[str, Any]], out: str | os.PathLike, baseline: str = "keras predict",
                   threads: int | None = None, details: bool = True) -> tuple[str, list[Path]]:
    """Write compare.md and the plots into the folder `out`; return (Markdown, plot paths).

    The Markdown has the merged table, one recommendation line per device (with int8-slower-than-
    fp32 warnings), and with `details` each device's own parity and latency tables. Without matplotlib
    the tables are written and the plots section says what is missing.
    """
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if baseline != "keras predict":  # the default: devices without Keras rows simply get no speed-up column
        for res in results:
            check_baseline(res, baseline)
    rows = merge_rows(results, baseline, threads)
    plots, plot_note = _plots(rows, out_dir)
    lines = ["## Devices", ""] + [f"- {environment_line(r['device'])}" for r in results] + [""]
    lines += ["## Formats across devices", "", compare_table(rows, baseline), ""]
    lines += ["## Recommendation", ""]
    for res in results:
        rec = recommend(res)
        lines.append(f"- {rec['line']}")
        lines += [f"  - warning: {w}" for w in rec["warnings"]]
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + ([plot_note] if plot_note else []) + [""]
    if details:
        lines += ["## Per device", ""] + [markdown_report(res, baseline) for res in results]
    text = "\n".join(lines)
    (out_dir / "compare.md").write_text(text)
    return text, plots


def run_compare(paths: Sequence[str | os.PathLike], out: str | os.PathLike, baseline: str = "keras predict",
                threads: int | None = None) -> tuple[str, list[Path]]:
    """Read results files and write the comparison into `out` (an edgetune "compare" folder, replaced atomically)."""
    if not paths:
        raise UserError("give at least one results JSON")
    results = [read_results(p) for p in paths]
    with staged_output(out, "compare", inputs=paths, force=True) as tmp:
        text, plots = compare_report(results, tmp, baseline, threads)
    return text, [Path(out) / p.name for p in plots]
