"""Evaluating a finished training run on its experiment's test splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from aenp.errors import InputError, MissingFileError
from aenp.evaluate.metrics import evaluate_per_task, summarise
from aenp.files import atomic_write, write_json
from aenp.models.io import load
from aenp.models.registry import model_name
from aenp.train.run import MODEL_DIR, RUN_CONFIG, experiment_from_config

METRICS_FILE = "metrics.json"
PER_TASK_FILE = "per_task_loglik.npz"


def evaluate_run(run_dir: str | Path, num_tasks: int | None = None) -> dict[str, Any]:
    """Evaluates the saved model of ``run_dir``; writes ``metrics.json`` and per-task logliks.

    ``metrics.json`` is strict JSON: a metric without a value (NaN) is ``null`` there, while
    the returned dict keeps NaN.

    ``per_task_loglik.npz`` holds one array ``[num_tasks]`` per split (and ``<split>_strict``
    for approximate models), in the split's fixed task order, for paired comparisons.

    Args:
        run_dir: Directory written by ``aenp train``.
        num_tasks: Tasks per evaluation split; defaults to the run's ``data.num_test_tasks``.

    Returns:
        ``{"model": key, "splits": {split: {metric: {"mean", "stderr", "num_tasks"}}}}``.
    """
    if num_tasks is not None and num_tasks < 1:
        raise InputError(f"num_tasks must be a positive integer or None, got {num_tasks}")
    run_dir = Path(run_dir)
    config_path = run_dir / RUN_CONFIG
    if not config_path.is_file():
        raise MissingFileError(f"{run_dir} is not a training run: {config_path} does not exist")
    cfg = OmegaConf.load(config_path)
    model = load(run_dir / MODEL_DIR)
    experiment = experiment_from_config(cfg)
    if num_tasks is None:
        num_tasks = cfg.data.num_test_tasks
    splits = {
        name: experiment.split(name, num_tasks, cfg.data.batch_size)
        for name in experiment.evaluation_splits
    }
    per_task = evaluate_per_task(model, splits)
    results = {
        "model": model_name(model),
        "experiment": experiment.name,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "splits": summarise(per_task),
    }
    write_json(run_dir / METRICS_FILE, results)
    with atomic_write(run_dir / PER_TASK_FILE) as tmp:
        np.savez(tmp, **{k: v["loglik"].numpy() for k, v in per_task.items()})
    return results


def load_per_task_loglik(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The per-task log-likelihoods written by :func:`evaluate_run`."""
    with np.load(Path(run_dir) / PER_TASK_FILE) as arrays:
        return dict(arrays)
