"""report.md of the main job: what failed first, then training, parity, latency, the recommendation and the plots.

A user who wanted a quantized model for the Pi reads the first lines: every preset that failed the gate
or was inconclusive, with the reason, and plainly whether any integer model met the accuracy budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TRAINING_PLOTS = ("learning_curves.png", "confusion_matrix.png", "sample_predictions.png")


def gate_problems(results: dict[str, Any], converted: dict[str, dict[str, Any]]) -> list[str]:
    """Lines for every preset that failed or was inconclusive: convert's failures (not benchmarked) and bench's verdicts."""
    lines = []
    benched = {Path(r["name"]).stem for r in results.get("parity", [])}
    for preset, row in converted.items():
        if preset in benched:
            continue  # bench judged the placed file on the same images: its verdict is the one reported below
        parity = row.get("parity") or {}
        verdict = parity.get("verdict") or row.get("status")
        if verdict in ("fail", "failed", "inconclusive", "error"):
            reason = parity.get("reason") or row.get("detail") or ""
            lines.append(f"{preset}: {'fail' if verdict == 'failed' else verdict} in convert — {reason}")
    for r in results.get("parity", []):
        if r.get("name") == "keras":
            continue
        if r.get("verdict") in ("fail", "inconclusive") or r.get("status") == "error":
            lines.append(f"{Path(r['name']).stem}: {r.get('verdict') or 'error'} — {r.get('reason') or r.get('note', '')}")
    return lines


def pipeline_report(run: Path, results: dict[str, Any], converted: dict[str, dict[str, Any]], compare_text: str,
                    reproduce: str):
    """Write RUN/report.md; return a PipelineResult (problems, whether an integer model met the budget)."""
    from edgetune.benchmarks.results import markdown_report
    from edgetune.pipeline import PipelineResult, training_summary

    rec = results.get("recommendation") or {}
    budget = results.get("max_drop", 0.5)
    problems = gate_problems(results, converted)
    integer_ok = rec.get("fastest_integer") is not None
    lines = [f"# edgetune pipeline report: {run.name}", ""]
    if integer_ok:
        lines.append(f"**Integer model within the {budget:g}-point budget: {rec['fastest_integer']}**"
                     + (" (inconclusive: too few held-out images to vouch for it)" if rec["fastest_integer"] in
                        rec.get("inconclusive", []) else ""))
    else:
        lines.append(f"**No integer model within the {budget:g}-point budget.** Every quantized preset failed the "
                     "gate (see below); the float exports are the only ones that kept the Keras model's accuracy.")
    lines.append("")
    if problems:
        lines += ["Presets that did not pass the gate:", ""] + [f"- {p}" for p in problems] + [""]
    else:
        lines += ["Every preset passed the gate.", ""]
    lines += [f"Training (Keras): {training_summary(run)}", ""]
    lines += [markdown_report(results), ""]
    flips = sorted((run / "export" / "flips").glob("*.png")) if (run / "export" / "flips").is_dir() else []
    if flips:
        lines += ["## Images whose top-1 changed", ""]
        lines += [f"- [{p.stem}]({p.relative_to(run).as_posix()})" for p in flips] + [""]
    lines += ["## Comparison view", "", compare_text.replace("](", "](results/"), ""]
    plots = [p for p in TRAINING_PLOTS if (run / p).is_file()]
    if plots:
        lines += ["## Training plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    results_path = Path(results["_path"]).relative_to(run) if results.get("_path") else ""
    lines += [f"Reproduce: `{reproduce}`; results JSON: `{results_path}`"]
    path = run / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return PipelineResult(report=path, run=run, problems=problems, integer_ok=integer_ok)
