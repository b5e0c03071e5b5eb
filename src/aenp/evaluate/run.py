"""Evaluating a finished training run on its experiment's test splits."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from aenp.errors import InputError
from aenp.evaluate.metrics import evaluate_per_task, summarise
from aenp.models.io import available_device
from aenp.models.registry import model_name

# The file names moved to aenp.run_directory (RunDirectory); they stay importable from here.
from aenp.run_directory import METRICS_FILE as METRICS_FILE
from aenp.run_directory import PER_TASK_FILE as PER_TASK_FILE
from aenp.run_directory import RunDirectory


def evaluation_device(setting: str | torch.device) -> str | torch.device:
    """The device ``setting`` names: ``auto`` is the GPU where there is one, else the CPU."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def evaluate_run(
    run_dir: str | os.PathLike, num_tasks: int | None = None, device: str | torch.device = "auto"
) -> dict[str, Any]:
    """Evaluates the saved model of ``run_dir``; writes ``metrics.json`` and per-task logliks.

    The model runs on ``device`` (``auto``: the GPU where there is one), in its saved dtype,
    without TF32 (:func:`~aenp.evaluate.metrics.ieee_float32`); the tasks and their ground
    truths are made on the CPU.

    ``metrics.json`` is strict JSON: a metric without a value (NaN) is ``null`` there, while
    the returned dict keeps NaN.

    ``per_task_loglik.npz`` holds one array ``[num_tasks]`` per split (and ``<split>_strict``
    for approximate models), in the split's fixed task order, for paired comparisons.

    Args:
        run_dir: Directory written by ``aenp train``.
        num_tasks: Tasks per evaluation split; defaults to the run's ``data.num_test_tasks``.
        device: Where the model runs: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...

    Returns:
        ``{"model": key, "splits": {split: {metric: {"mean", "stderr", "num_tasks"}}}}``.

    Raises:
        InputError: If ``num_tasks`` is not a positive integer or None, or ``device`` is not
            a device this machine has (nothing is written).
        MissingFileError: If ``run_dir`` holds no config or no saved model.
    """
    if num_tasks is not None and num_tasks < 1:
        raise InputError(f"num_tasks must be a positive integer or None, got {num_tasks}")
    device = available_device(evaluation_device(device), "device")
    run = RunDirectory(run_dir)
    cfg = run.config()
    model = run.load_model(device)
    experiment = run.experiment()
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
    run.write_results(results, {k: v["loglik"].numpy() for k, v in per_task.items()})
    return results


def load_per_task_loglik(run_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """The per-task log-likelihoods written by :func:`evaluate_run`."""
    return RunDirectory(run_dir).per_task_loglik()
