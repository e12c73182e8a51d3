"""Pick the tf.distribute strategy: one device, the GPUs of one host, or several hosts (TF_CONFIG).

Batch sizes are global: TensorFlow splits every batch across replicas. With several workers only
the chief writes the run dir; worker i keeps its restart checkpoints in `RUN.partial/workers/i/`.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from edgetune import UserError


def tf_config_from_workers(workers: str, index: int | None) -> dict:
    """Build TF_CONFIG from `host:port,host:port` and this worker's index."""
    hosts = [w.strip() for w in workers.split(",") if w.strip()]
    if len(hosts) < 1 or any(":" not in h for h in hosts):
        raise UserError(f"--workers must be a comma-separated host:port list, got {workers!r}")
    if index is None or not 0 <= index < len(hosts):
        raise UserError(f"--worker-index must be in 0..{len(hosts) - 1}, got {index}")
    return {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}


def _is_chief(tf_config: dict) -> bool:
    task = tf_config.get("task", {})
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0 and "chief" not in tf_config.get("cluster", {})


def make_strategy(cfg) -> tuple[tf.distribute.Strategy, bool]:
    """Return (strategy, is_chief). Must run before any other TensorFlow op (multi-worker needs that)."""
    if cfg.workers:
        os.environ["TF_CONFIG"] = json.dumps(tf_config_from_workers(cfg.workers, cfg.worker_index))
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    n_workers = sum(len(v) for v in tf_config.get("cluster", {}).values())
    kind = cfg.strategy
    if kind == "auto":
        gpus = tf.config.list_physical_devices("GPU")
        kind = "multiworker" if n_workers > 1 else ("mirrored" if len(gpus) > 1 else "one")
    if kind == "one":
        return tf.distribute.get_strategy(), True
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(), True
    if not tf_config:
        raise UserError("--strategy multiworker needs TF_CONFIG in the environment or --workers/--worker-index")
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    return strategy, _is_chief(tf_config)


def is_multiworker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def shard_by_data(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Shard batches across workers by element: file-based sharding does not apply to a file list in memory."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def worker_index(cfg) -> int:
    """This process's index among the workers (0 outside a cluster): names its stable checkpoint folder."""
    if cfg.workers:
        return int(cfg.worker_index or 0)
    task = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}").get("task", {})
    return int(task.get("index", 0)) + (1 if task.get("type") == "worker" and "chief" in _cluster() else 0)


def _cluster() -> dict:
    return json.loads(os.environ.get("TF_CONFIG", "{}") or "{}").get("cluster", {})
