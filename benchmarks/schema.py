"""The results JSON's shape, checked field by field on reading: what passes can be rendered and merged safely.

A results file travels between machines (a Pi's JSON is compared on a workstation) and may be edited or
cut short on the way, so every field the tables, plots and recommendation use is type-checked here and a
bad one gives one ContractError naming the row and field, never a crash deeper in the rendering.
"""

from __future__ import annotations

from typing import Any

from edgetune.contract import ContractError

RESULTS_KIND = "edgetune-bench"
RESULTS_SCHEMA = 1
REQUIRED = ("kind", "schema", "created", "device", "config", "models", "parity", "latency")
LATENCY_KEYS = ("name", "mode", "threads", "status", "p50_ms", "p99_ms")

NUM, INT, STR, BOOL, DICT, PAIR = "number", "integer", "string", "boolean", "object", "pair"
ROW_FIELDS = {
    "models": {"name": STR, "format": STR, "preset": STR, "size_bytes": INT, "input_dtype": STR, "path": STR},
    "parity": {"name": STR, "status": STR, "n": INT, "accuracy": NUM, "keras_accuracy": NUM, "drop_points": NUM,
               "agreement": NUM, "max_abs_dprob": NUM, "mean_abs_dprob": NUM, "within_budget": BOOL, "verdict": STR,
               "reason": STR, "note": STR, "accuracy_ci95": PAIR, "agreement_ci95": PAIR, "drop_ci95": PAIR,
               "per_class_accuracy": DICT, "size_bytes": INT, "images_to_decide": INT, "flips": INT},
    "latency": {"name": STR, "mode": STR, "threads": INT, "status": STR, "p50_ms": NUM, "p90_ms": NUM, "p99_ms": NUM,
                "mean_ms": NUM, "std_ms": NUM, "min_ms": NUM, "load_s": NUM, "first_ms": NUM, "peak_rss_mb": NUM,
                "size_bytes": INT, "note": STR, "format": STR, "preset": STR, "accelerator": STR,
                "accelerator_confirmed": BOOL, "extra": DICT, "throughput_ips": NUM},
}
EXTRA_FIELDS = {"predictor_over_raw_p50": NUM, "predictor_over_raw_mean": NUM, "decode_p50_ms": NUM, "resize_p50_ms": NUM,
                "inference_p50_ms": NUM, "decode_resize_p50_ms": NUM, "sequential_ips": NUM, "speedup": NUM,
                "decode_workers": INT, "images": INT, "jpeg_draft": BOOL, "interpreters": INT, "decode_pool_ips": NUM,
                "parallel_ips": NUM, "interpreter_threads": INT}
"""Numbers in a latency row's `extra` that the tables print."""
DEVICE_FIELDS = {"name": STR, "kind": STR, "python": STR, "cpu": DICT, "os": DICT, "libraries": DICT, "thermal": DICT}


def _ok(value: Any, kind: str) -> bool:
    """None is allowed everywhere (a value not measured); otherwise the JSON type must match."""
    if value is None:
        return True
    if kind == NUM:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if kind == INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == STR:
        return isinstance(value, str)
    if kind == BOOL:
        return isinstance(value, bool)
    if kind == DICT:
        return isinstance(value, dict)
    return isinstance(value, list) and len(value) == 2 and all(_ok(v, NUM) and v is not None for v in value)


def validate_results(d: Any, origin: str = "results") -> dict[str, Any]:
    """Check a results document's kind, schema version, required fields and field types.

    Raises:
        ContractError: Not an edgetune results file, an unsupported schema, a missing or mistyped field.
    """
    if not isinstance(d, dict) or d.get("kind") != RESULTS_KIND:
        raise ContractError(f"{origin}: not an edgetune bench results file (kind {d.get('kind') if isinstance(d, dict) else None!r})")
    if d.get("schema") != RESULTS_SCHEMA:
        raise ContractError(f"{origin}: results schema {d.get('schema')!r} is not supported (this edgetune reads {RESULTS_SCHEMA})")
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise ContractError(f"{origin}: missing fields {missing}")
    device = d["device"]
    if not isinstance(device, dict) or not isinstance(device.get("name"), str) or not device["name"]:
        raise ContractError(f"{origin}: device.name is missing")
    _fields(device, DEVICE_FIELDS, f"{origin}: device")
    if not _ok(d.get("max_drop"), NUM):
        raise ContractError(f"{origin}: max_drop must be a number, got {d['max_drop']!r}")
    for key, fields in ROW_FIELDS.items():
        if not isinstance(d[key], list):
            raise ContractError(f"{origin}: '{key}' must be a list of rows, got {type(d[key]).__name__}")
        needed = LATENCY_KEYS if key == "latency" else ("name",)
        for i, row in enumerate(d[key]):
            if not isinstance(row, dict):
                raise ContractError(f"{origin}: {key} row {i} is a {type(row).__name__}, not an object")
            lost = [k for k in needed if k not in row or (k == "name" and not row[k])]
            if lost:
                raise ContractError(f"{origin}: {key} row {i} lacks {lost}")
            _fields(row, fields, f"{origin}: {key} row {i}")
            if key == "latency" and isinstance(row.get("extra"), dict):
                _fields(row["extra"], EXTRA_FIELDS, f"{origin}: latency row {i} extra")
            if key == "parity" and not all(_ok(v, NUM) for v in (row.get("per_class_accuracy") or {}).values()):
                raise ContractError(f"{origin}: parity row {i} has a non-numeric per_class_accuracy")
            if key == "latency" and row["status"] == "ok" and (row["p50_ms"] is None or row["p99_ms"] is None
                                                               or not isinstance(row["threads"], int) or row["threads"] < 1):
                raise ContractError(f"{origin}: latency row {i} has status ok but no p50_ms/p99_ms or thread count")
    return d


def _fields(row: dict[str, Any], fields: dict[str, str], where: str) -> None:
    for name, kind in fields.items():
        if name in row and not _ok(row[name], kind):
            raise ContractError(f"{where}: {name} must be a {kind} (or null), got {row[name]!r:.60}")
