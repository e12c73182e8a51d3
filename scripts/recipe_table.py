"""The recipe table of issue 12: linear probe vs `--recipe tutorial` vs `--recipe default`, per data set and seed.

    python scripts/recipe_table.py --out /tmp/recipe_table                      # 4 sets x 3 seeds x 3 recipes
    python scripts/recipe_table.py --sets trashnet --seeds 0 --recipes default  # one cell

Each cell is a real `edgetune train` run (`train_run`, seeded, fast path as by default) or the probe of
scripts/linear_probe.py on exactly the same splits. Scored images: cats-vs-dogs on all 1,000 validation
images (the run's val + test splits together; its data has train/ + validation/), each dev set on its
seeded 20% test split. One JSON line per cell goes to OUT/rows.jsonl (a rerun skips cells already
there), and the table (mean over seeds, with the pooled 95% interval, macro F1, worst class recall and
training wall time) is printed as Markdown. Extra `--flags` are passed to every default-recipe run
(ablations, e.g. `--flags "--class-weight none"`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
SETS = {"cats_vs_dogs": ASSETS / "cats_and_dogs_filtered", "trashnet": ASSETS / "devsets" / "trashnet",
        "cifar10_longtail": ASSETS / "devsets" / "cifar10_longtail", "concrete_crack": ASSETS / "devsets" / "concrete_crack"}


def train_cell(data: Path, seed: int, recipe: str, out: Path, flags: list[str]) -> dict:
    """One `edgetune train` run in its own process (a fresh TensorFlow, timed as a user would see it)."""
    run = out / "runs" / f"{data.name}_{recipe}_s{seed}"
    cmd = [sys.executable, "-m", "edgetune.cli", "train", "--data", str(data), "--out", str(run), "--recipe", recipe,
           "--seed", str(seed), "--verbose", "0", "--force", *flags]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed: {shlex.join(cmd)}\n{proc.stderr[-3000:]}")
    metrics = json.loads((run / "metrics.json").read_text())
    return _scored(metrics, data) | {"seconds": round(seconds, 1), "train_seconds": round(
        sum(metrics[s]["seconds"] for s in ("stage1", "stage2") if s in metrics), 1),
        "epochs_run": [metrics[s].get("epochs_run") for s in ("stage1", "stage2") if s in metrics]}


def _scored(metrics: dict, data: Path) -> dict:
    """The scored split's report: test, or val + test pooled where the data set gave its own validation set."""
    final = metrics["final"]
    if not (data / "train").is_dir():
        t = final["test"]
        return {k: t[k] for k in ("accuracy", "n", "correct", "macro_f1", "worst_recall")}
    parts = [final["val"], final["test"]]
    n, correct = sum(p["n"] for p in parts), sum(p["correct"] for p in parts)
    per_class = {c: sum(p["per_class"][c]["recall"] * p["per_class"][c]["support"] for p in parts) /
                 max(1, sum(p["per_class"][c]["support"] for p in parts)) for c in parts[0]["per_class"]}
    return {"accuracy": correct / n, "n": n, "correct": correct, "worst_recall": round(min(per_class.values()), 4),
            "macro_f1": round(sum(p["macro_f1"] * p["n"] for p in parts) / n, 4)}  # n-weighted mean of the two splits


def probe_cell(data: Path, seed: int, out: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "scripts" / "linear_probe.py"), "--data", str(data), "--seed", str(seed),
           "--cache", str(out / "probe_features")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {shlex.join(cmd)}\n{proc.stderr[-3000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    return {k: row[k] for k in ("accuracy", "n", "correct", "macro_f1", "worst_recall", "seconds")}


def table(rows: list[dict]) -> str:
    from edgetune.stats import wilson_interval

    lines = ["| data | recipe | seeds | accuracy, mean (pooled 95% CI) | macro F1 | worst class recall | wall s |",
             "|---|---|---:|---|---:|---:|---:|"]
    for name in SETS:
        for recipe in ("linear_probe", "tutorial", "default"):
            cell = [r for r in rows if r["set"] == name and r["recipe"] == recipe]
            if not cell:
                continue
            n, correct = sum(r["n"] for r in cell), sum(r["correct"] for r in cell)
            lo, hi = wilson_interval(correct, n)
            mean = lambda k: sum(r[k] for r in cell) / len(cell)  # noqa: E731
            accs = ", ".join(f"{r['accuracy'] * 100:.1f}" for r in sorted(cell, key=lambda r: r["seed"]))
            lines.append(f"| {name} | {recipe} | {len(cell)} | {mean('accuracy') * 100:.1f}% ({lo * 100:.1f}-{hi * 100:.1f}%; "
                         f"seeds {accs}) | {mean('macro_f1'):.3f} | {mean('worst_recall'):.3f} | {mean('seconds'):.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("/tmp/edgetune_recipe_table"))
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--recipes", default="linear_probe,tutorial,default")
    p.add_argument("--flags", default="", help="extra flags for the default-recipe runs (ablations)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows_file = args.out / "rows.jsonl"
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()] if rows_file.exists() else []
    # Seed-major: an interrupted table still covers every set (seed 0 of all four before seed 1 of any).
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in args.sets.split(","):
            for recipe in args.recipes.split(","):
                key = {"set": name, "seed": seed, "recipe": recipe, "flags": args.flags if recipe == "default" else ""}
                if any(all(r.get(k) == v for k, v in key.items()) for r in rows):
                    continue
                if recipe == "linear_probe":
                    row = key | probe_cell(SETS[name], seed, args.out)
                else:
                    flags = shlex.split(args.flags) if recipe == "default" else []
                    row = key | train_cell(SETS[name], seed, recipe, args.out, flags)
                rows.append(row)
                with rows_file.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    print(table([r for r in rows if r["recipe"] != "default" or r.get("flags", "") == args.flags]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
