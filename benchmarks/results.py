"""The versioned results JSON of `edgetune bench`, and its views: Markdown tables and the recommendation.

Rows are the data (parity rows, latency rows, model records); everything printed or plotted is
computed from them, so a results file from a Raspberry Pi can be re-rendered or merged anywhere.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgetune.benchmarks.parity import Gate, preset_kind
from edgetune.benchmarks.schema import RESULTS_KIND, RESULTS_SCHEMA, validate_results
from edgetune.contract import ContractError, write_json_atomic

def make_results(device: dict[str, Any], config: dict[str, Any], models: list[dict[str, Any]],
                 parity: list[dict[str, Any]], latency: list[dict[str, Any]], run: str | None = None,
                 max_drop: float = 0.5) -> dict[str, Any]:
    """Assemble one results document (with its recommendation) from rows."""
    res = {
        "kind": RESULTS_KIND, "schema": RESULTS_SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device, "config": config, "run": run, "max_drop": max_drop,
        "models": models, "parity": parity, "latency": latency,
    }
    res["recommendation"] = recommend(res)
    return res


def write_results(path: str | os.PathLike, results: dict[str, Any]) -> Path:
    validate_results(results, str(path))
    return write_json_atomic(path, results)


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate one results JSON."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContractError(f"results file {p} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ContractError(f"{p}: not readable JSON ({str(exc)[:200]})") from exc
    return validate_results(data, str(p))


# ------------------------------------------------------------------ row helpers
KERAS_LABELS = {"keras_predict": "keras predict", "keras_call": "keras call", "keras_function": "keras tf.function",
                "keras_compiled": "keras XLA"}
"""Table names of the Keras baseline modes (see edgetune.benchmarks.keras_baseline)."""


def row_label(row: dict[str, Any]) -> str:
    """The name a latency row has in tables: 'tflite_int8.tflite', 'tflite_int8.tflite (raw invoke)', 'keras predict'."""
    mode = row["mode"]
    if mode in KERAS_LABELS:
        return KERAS_LABELS[mode]
    if mode == "raw_invoke":
        return f"{row['name']} (raw invoke)"
    if mode == "e2e":
        return f"{row['name']} (file->label)"
    if mode == "throughput":
        return f"{row['name']} (folder throughput)"
    return row["name"]


def check_baseline(results: dict[str, Any], baseline: str) -> None:
    """Raise a UserError naming the rows when `baseline` is not the label of any latency row."""
    labels = list(dict.fromkeys(row_label(r) for r in results["latency"]))
    if labels and baseline not in labels:
        from edgetune import UserError

        raise UserError(f"--baseline {baseline!r} is not a row of these results; rows: {', '.join(labels)}")


def is_int8(model: dict[str, Any]) -> bool:
    """Integer-quantized activations (full int8 / QDQ int8), from the preset name or the input dtype."""
    preset = str(model.get("preset", "")).lower()
    return any(k in preset for k in ("int8", "qdq", "uint8")) or str(model.get("input_dtype")) in ("int8", "uint8")


def is_fp32(model: dict[str, Any]) -> bool:
    preset = str(model.get("preset", "")).lower()
    return any(k in preset for k in ("fp32", "float32")) and not is_int8(model)


def max_threads(results: dict[str, Any]) -> int | None:
    ts = [r["threads"] for r in results["latency"] if r["status"] == "ok" and r["threads"] and r["mode"] == "predictor"]
    return max(ts) if ts else None


def _lat(results: dict[str, Any], name: str, threads: int | None, mode: str = "predictor") -> dict[str, Any] | None:
    for r in results["latency"]:
        if r["name"] == name and r["mode"] == mode and r["threads"] == threads and r["status"] == "ok":
            return r
    return None


def recommend(results: dict[str, Any]) -> dict[str, Any]:
    """Smallest and fastest exported model within the accuracy budget, the fastest integer one, and warnings.

    A model is a candidate unless the gate failed it (its verdict) or its measured drop exceeds the
    budget; inconclusive ones (too few images to vouch for them) are candidates and named as such.
    Fastest is judged on the Predictor p50 at the largest thread count measured. Models without a Keras
    comparison count as candidates, and the line says accuracy was not checked.
    """
    threads = max_threads(results)
    parity = {r["name"]: r for r in results.get("parity", [])}
    out: dict[str, Any] = {"threads": threads, "smallest": None, "fastest": None, "fastest_integer": None,
                           "warnings": [], "unchecked": [], "inconclusive": []}
    candidates = []
    for m in results["models"]:
        if m.get("format") == "keras":  # the training model is the reference, not a deployment format
            continue
        p = parity.get(m["name"])
        if p is not None and (p.get("verdict") == "fail" or p.get("within_budget") is False or p.get("status") == "error"):
            continue
        if p is None or p.get("within_budget") is None:
            out["unchecked"].append(m["name"])
        elif p.get("verdict") == "inconclusive":
            out["inconclusive"].append(m["name"])
        candidates.append(m)
    sized = [m for m in candidates if m.get("size_bytes")]
    if sized:
        out["smallest"] = min(sized, key=lambda m: m["size_bytes"])["name"]
    timed = [(r["p50_ms"], m["name"]) for m in candidates if (r := _lat(results, m["name"], threads))]
    if timed:
        out["fastest"] = min(timed)[1]
    timed_int = [(t, n) for t, n in timed if preset_kind(n) != "float"]
    integer = [m["name"] for m in candidates if preset_kind(m["name"]) != "float"]
    out["fastest_integer"] = min(timed_int)[1] if timed_int else (integer[0] if integer else None)
    out["warnings"] = _int8_slower_warnings(results)
    budget = results.get("max_drop")
    if budget is None:  # absent or null (the schema allows a value not recorded): the default budget
        budget = Gate().max_drop
    line = (f"{results['device']['name']}: within the {budget:g}-point accuracy budget, smallest = {out['smallest'] or 'none'}, "
            f"fastest = {out['fastest'] or 'none'}" + (f" (p50 at {threads} threads)" if threads else ""))
    if out["fastest_integer"] is None and any(preset_kind(m["name"]) != "float" for m in results["models"]
                                              if m.get("format") != "keras"):
        line += f"; no integer model within the {budget:g}-point budget"
    if out["inconclusive"]:
        line += f"; inconclusive (too few images to vouch for them): {', '.join(out['inconclusive'])}"
    if out["unchecked"]:
        line += f"; accuracy not checked against Keras for {', '.join(out['unchecked'])}"
    out["line"] = line
    return out


def _int8_slower_warnings(results: dict[str, Any]) -> list[str]:
    """Integer models slower than the float model of the same format on this device, per thread count."""
    warnings = []
    fp32 = [m for m in results["models"] if is_fp32(m)]
    for m in results["models"]:
        if not is_int8(m):
            continue
        same = [f for f in fp32 if f.get("format") == m.get("format")] or fp32
        for f in same[:1]:
            for r in results["latency"]:
                if r["name"] != m["name"] or r["mode"] != "predictor" or r["status"] != "ok":
                    continue
                ref = _lat(results, f["name"], r["threads"])
                if ref and r["p50_ms"] > ref["p50_ms"]:
                    warnings.append(f"{m['name']} (int8) is slower than {f['name']} at {r['threads']} thread(s): "
                                    f"{_ms(r['p50_ms'])} vs {_ms(ref['p50_ms'])} ms p50")
    return warnings


def key_ratios(results: dict[str, Any]) -> list[str]:
    """Speed-ups of each int8 model over Keras `predict` (what the tutorial runs) and over the fastest Keras row
    (what a Keras user could run at best), and the Predictor's cost over a raw invoke()."""
    lines = []
    threads = sorted({r["threads"] for r in results["latency"] if r["threads"] and r["status"] == "ok"})
    int8 = [m["name"] for m in results["models"] if is_int8(m) and m.get("format") != "keras"]
    for name in int8:
        vs_predict, vs_best = [], []
        for t in threads:
            m = _lat(results, name, t)
            keras = [r for r in results["latency"] if r["name"] == "keras" and r["threads"] == t and r["status"] == "ok"
                     and r["mode"] in KERAS_LABELS and r.get("p50_ms")]
            if not m or not keras:
                continue
            predict = next((r for r in keras if r["mode"] == "keras_predict"), None)
            best = min(keras, key=lambda r: r["p50_ms"])
            if predict:
                vs_predict.append(f"{predict['p50_ms'] / m['p50_ms']:.1f}× @{t}t")
            vs_best.append(f"{best['p50_ms'] / m['p50_ms']:.1f}× @{t}t ({KERAS_LABELS[best['mode']]})")
        if vs_predict:
            lines.append(f"keras predict / {name}: " + ", ".join(vs_predict))
        if vs_best:
            lines.append(f"fastest keras / {name}: " + ", ".join(vs_best))
    wrapper = [(r["extra"]["predictor_over_raw_p50"], r["name"], r["threads"]) for r in results["latency"]
               if r["mode"] == "predictor" and r["status"] == "ok" and (r.get("extra") or {}).get("predictor_over_raw_p50")]
    if wrapper:
        worst = max(wrapper, key=lambda w: w[0])
        median = sorted(w[0] for w in wrapper)[len(wrapper) // 2]
        flag = "within" if worst[0] < 1.05 else "above"
        lines.append(f"Predictor / raw invoke(): median {median:.3f}, worst {worst[0]:.3f} ({worst[1]} @{worst[2]}t), "
                     f"{flag} the 1.05 target")
    return lines


# ------------------------------------------------------------------ Markdown views
def _ms(v: Any) -> str:
    """Milliseconds with three significant digits (tiny test models run in microseconds)."""
    if v is None:
        return "-"
    return f"{v:.2f}" if v >= 10 else f"{v:.3g}"


def _f(v: Any, fmt: str = ".2f", pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if pct:
        return f"{v * 100:.1f}%"
    return format(v, fmt) if isinstance(v, (int, float)) else str(v)


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _interval(ci: Any, pct: bool = True, fmt: str = ".1f") -> str:
    if not ci:
        return ""
    lo, hi = ci
    return f" ({lo * 100:{fmt}}-{hi * 100:{fmt}})" if pct else f" ({lo:+.2f} to {hi:+.2f})"


def parity_table(results: dict[str, Any]) -> str:
    """Verdict, size, accuracy, drop and agreement (with 95% intervals), |Δp| and per-class accuracy, Keras first."""
    sizes = {m["name"]: m.get("size_bytes") for m in results["models"]}
    rows = []
    for r in results["parity"]:
        per_class = ", ".join(f"{k} {_f(v, pct=True)}" for k, v in (r.get("per_class_accuracy") or {}).items())
        if len(per_class) > 60:
            per_class = per_class[:57] + "..."
        size = sizes.get(r["name"], r.get("size_bytes"))
        verdict = "ref" if r["name"] == "keras" else (r.get("verdict") or ("error" if r.get("status") == "error" else "-"))
        agree = _f(r.get("agreement"), pct=True) + (_interval(r.get("agreement_ci95")) if r.get("agreement") is not None else "")
        drop = _f(r.get("drop_points"), "+.2f") + (_interval(r.get("drop_ci95"), pct=False) if r.get("drop_points") is not None else "")
        rows.append([r["name"], verdict, _f(size / 1e6 if size else None, ".2f"), r.get("n", "-"),
                     _f(r.get("accuracy"), pct=True), drop, agree, _f(r.get("max_abs_dprob"), ".4f"),
                     per_class or r.get("note", "")])
    return md_table(["model", "gate", "MB", "n", "accuracy", "drop (pts, 95% CI)", "agree top-1 (95% CI)", "max abs Δp",
                     "per class"], rows)


def gate_lines(results: dict[str, Any]) -> list[str]:
    """One line per model the gate did not pass: its verdict and the reason."""
    lines = []
    for r in results.get("parity", []):
        if r.get("name") != "keras" and r.get("verdict") in ("fail", "inconclusive"):
            lines.append(f"{r['name']}: {r['verdict']} — {r.get('reason') or r.get('note', '')}")
    return lines


def latency_table(results: dict[str, Any], baseline: str = "keras predict") -> str:
    """One row per model and mode: p50/p99 per thread count, speed-up vs `baseline`, load, first, RSS."""
    threads = sorted({r["threads"] for r in results["latency"] if r["threads"]})
    base = {r["threads"]: r for r in results["latency"] if row_label(r) == baseline and r["status"] == "ok"}
    by_label: dict[str, dict[int, dict]] = {}
    for r in results["latency"]:
        by_label.setdefault(row_label(r), {})[r["threads"]] = r
    header = ["model"]
    for t in threads:
        header += [f"p50 ms @{t}t", f"p99 ms @{t}t"] + ([f"× vs {baseline} @{t}t"] if base else [])
    header += ["load s", "first ms", "peak RSS MB", "accelerator", "note"]
    rows = []
    for label, by_t in by_label.items():
        row = [label]
        for t in threads:
            r = by_t.get(t)
            if r is None or r["status"] != "ok":
                row += [r["status"] if r else "-", "-"] + (["-"] if base else [])
                continue
            row += [_ms(r["p50_ms"]), _ms(r["p99_ms"])]
            if base:
                b = base.get(t)
                speed = b["p50_ms"] / r["p50_ms"] if b and r["p50_ms"] else None
                row.append(_f(speed, ".2f") + ("×" if speed else ""))
        any_r = next(iter(by_t.values()))
        ok = [r for r in by_t.values() if r["status"] == "ok"] or [any_r]
        r0 = ok[0]
        accel = r0.get("accelerator") or ""
        if accel and r0.get("accelerator_confirmed") is False:
            accel += " (not confirmed)"
        notes = [r0.get("note", "")]
        ratios = [f"{r['extra']['predictor_over_raw_p50']:.3f} @{t}t" for t, r in sorted(by_t.items(), key=lambda kv: kv[0] or 0)
                  if (r.get("extra") or {}).get("predictor_over_raw_p50")]
        if ratios:
            notes.append("predictor/raw p50 " + ", ".join(ratios))
        notes.append(_image_path_note(r0))
        row += [_f(r0.get("load_s"), ".3f"), _ms(r0.get("first_ms")), _f(r0.get("peak_rss_mb"), ".0f"), accel,
                "; ".join(n for n in notes if n)]
        rows.append(row)
    return md_table(header, rows)


def _image_path_note(row: dict[str, Any]) -> str:
    """The file->label row's decode / resize / inference p50s; the throughput row's images/s vs one at a time."""
    x = row.get("extra") or {}
    if row["mode"] == "e2e" and None not in (x.get("decode_p50_ms"), x.get("resize_p50_ms"), x.get("inference_p50_ms")):
        return (f"p50 decode {x['decode_p50_ms']:.2f} + resize {x['resize_p50_ms']:.2f} + inference "
                f"{x['inference_p50_ms']:.2f} ms{', JPEG draft' if x.get('jpeg_draft') else ''}, {row['threads']} threads")
    if row["mode"] == "e2e" and x.get("decode_resize_p50_ms") is not None:  # results written before the split
        return f"decode+resize p50 {x['decode_resize_p50_ms']:.2f} ms, {row['threads']} threads"
    if row["mode"] == "throughput" and x.get("parallel_ips") and x.get("sequential_ips"):
        n, w = x["interpreters"], x["decode_workers"]
        return (f"{x['parallel_ips']:.0f} img/s with {n} interpreters of {x.get('interpreter_threads') or 1} thread(s) side by "
                f"side vs {x['sequential_ips']:.0f} one at a time ({x['speedup']:.2f}x); "
                f"{x['decode_pool_ips']:.0f} img/s decoding in {w} thread{'s' if w != 1 else ''} for one "
                f"{row['threads']}-thread interpreter")
    if row["mode"] == "throughput" and x.get("sequential_ips") and row.get("throughput_ips"):
        w = x["decode_workers"]
        return (f"{row['throughput_ips']:.0f} img/s decoding in {w} thread{'s' if w != 1 else ''} vs "
                f"{x['sequential_ips']:.0f} one at a time ({x['speedup']:.2f}x), {row['threads']} interpreter threads")
    return ""


def environment_line(device: dict[str, Any]) -> str:
    """One line describing the machine; the fingerprint is free-form, so every part is optional."""
    def part(d: Any, key: str) -> Any:
        return d.get(key) if isinstance(d, dict) else None

    cpu, libs, thermal, os_info = (device.get(k) or {} for k in ("cpu", "libraries", "thermal", "os"))
    lib = ", ".join(f"{k} {libs[k]}" for k in ("ai-edge-litert", "onnxruntime", "tensorflow") if isinstance(libs, dict) and k in libs)
    extra = ""
    throttled = part(thermal, "throttled")
    if throttled:
        extra = f", throttled now={part(throttled, 'now')}"
    temps = part(thermal, "temperature_c")
    values = [v for v in temps.values() if isinstance(v, (int, float))] if isinstance(temps, dict) else []
    if values:
        extra += f", {max(values):.0f}°C"
    simd = part(cpu, "simd")
    simd = "/".join(str(v) for v in simd) if isinstance(simd, list) and simd else "-"
    return (f"{device.get('name')} ({device.get('kind')}): {part(cpu, 'model')}, {part(cpu, 'cores_usable')} cores, "
            f"SIMD {simd}, {part(os_info, 'distribution') or part(os_info, 'system')}, "
            f"Python {device.get('python')}, {lib}{extra}")


def sampling_note(parity: Sequence[dict[str, Any]]) -> str:
    """One line on what the test split can resolve: points per image and the reference accuracy's 95% interval."""
    ref = next((r for r in parity if r.get("name") == "keras" and r.get("n")), None) or next((r for r in parity if r.get("n")), None)
    if ref is None or ref.get("accuracy") is None:
        return ""
    n = ref["n"]
    ci = ref.get("accuracy_ci95")
    line = f"On {n} images one image is {100 / n:.2g} points"
    if ci:
        line += f"; {ref['name']} accuracy {ref['accuracy'] * 100:.1f}% has a 95% interval of {ci[0] * 100:.1f}-{ci[1] * 100:.1f}%"
    return line + " (agreement and drop compare models on the same images, so they resolve finer than that)."


def markdown_report(results: dict[str, Any], baseline: str = "keras predict") -> str:
    """The whole results document as Markdown: environment, parity, latency, recommendation."""
    out = [f"### {results['device']['name']}", "", environment_line(results["device"]), ""]
    if results.get("run"):
        out += [f"Run: `{results['run']}`", ""]
    if results["parity"]:
        what = "every held-out image of the run" if results.get("run") else "given labelled images"
        out += [f"**Parity** ({what}; drop = Keras accuracy minus the model's, in points; gate: pass / fail / "
                "inconclusive with 95% confidence)", "", parity_table(results), ""]
        out += [f"- {line}" for line in gate_lines(results)] + ([""] if gate_lines(results) else [])
        note = sampling_note(results["parity"])
        if note:
            out += [note, ""]
    if results["latency"]:
        out += ["**Latency** (batch 1)", "", latency_table(results, baseline), ""]
    ratios = key_ratios(results)
    if ratios:
        out += ["**Key ratios** (p50)", ""] + [f"- {r}" for r in ratios] + [""]
    rec = recommend(results)  # a view of the rows: recomputed, never trusted from the file
    out += [f"**Recommendation** — {rec['line']}", ""]
    out += [f"**Warning** — {w}" for w in rec.get("warnings", [])]
    return "\n".join(out).rstrip() + "\n"
