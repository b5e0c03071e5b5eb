"""A training run's directory: where its config, model, records and results lie.

:class:`RunDirectory` is the one place that knows the layout (docs/architecture.md, Run
directories); training, evaluation, reproduction and prediction all go through it:

    config.yaml            the resolved config, written when the run starts
    checkpoints/           best.ckpt (validation log-likelihood) and last.ckpt
    logs/version_<k>/      CSV logs, one version per (re)start
    model/                 the best weights, saved with aenp.save when training finishes
    training.json          training seconds and the config it finished with
    metrics.json           aenp evaluate: mean ± standard error per split and metric
    per_task_loglik.npz    aenp evaluate: one array [num_tasks] per split
    train.log              output of a run trained in a process of its own
    evaluate.log           output of a run evaluated in a process of its own
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from aenp.data.experiments import Experiment, get_experiment
from aenp.errors import MissingFileError
from aenp.files import atomic_write, write_json
from aenp.models.io import load, load_config, save
from aenp.models.neural_process import NeuralProcess

RUN_CONFIG = "config.yaml"
MODEL_DIR = "model"
TRAINING_RECORD = "training.json"
LOG_DIR = "logs"
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT = "best"
LAST_CHECKPOINT = "last"
"""Checkpoint names without their suffix, as Lightning's ``ModelCheckpoint`` takes them."""
CHECKPOINT_SUFFIX = ".ckpt"
METRICS_FILE = "metrics.json"
PER_TASK_FILE = "per_task_loglik.npz"
TRAIN_LOG = "train.log"
"""Output of a run that ``aenp reproduce --parallel`` trains in a process of its own."""
EVALUATE_LOG = "evaluate.log"
"""Output of a run that ``aenp reproduce --parallel`` evaluates in a process of its own."""


def experiment_from_config(cfg: DictConfig, **extra: Any) -> Experiment:
    """The experiment a config names, built with its ``experiment.options`` and ``extra``."""
    options = cfg.experiment.get("options")
    options = {} if options is None else OmegaConf.to_container(options, resolve=True)
    return get_experiment(cfg.experiment.name, **options, **extra)


def model_directory(path: str | os.PathLike) -> Path:
    """The saved model of the run directory ``path``, or ``path`` itself if it holds none."""
    model = RunDirectory(path).model_path
    return model if model.is_dir() else Path(path)


@dataclass(frozen=True)
class RunDirectory:
    """The directory of one training run (``run_dir`` of ``aenp train``) and its files."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config_path(self) -> Path:
        """The resolved config the run was started with."""
        return self.path / RUN_CONFIG

    @property
    def model_path(self) -> Path:
        """The folder of the trained model (:func:`aenp.save`)."""
        return self.path / MODEL_DIR

    @property
    def training_record_path(self) -> Path:
        """Training seconds and the config the run finished with."""
        return self.path / TRAINING_RECORD

    @property
    def log_dir(self) -> Path:
        """The CSV logs, ``version_<k>/metrics.csv`` per (re)start."""
        return self.path / LOG_DIR

    @property
    def checkpoint_dir(self) -> Path:
        """The training checkpoints."""
        return self.path / CHECKPOINT_DIR

    @property
    def last_checkpoint(self) -> Path:
        """The checkpoint of the latest epoch, from which a run started again resumes."""
        return self.checkpoint_dir / f"{LAST_CHECKPOINT}{CHECKPOINT_SUFFIX}"

    @property
    def metrics_path(self) -> Path:
        """The evaluation results (strict JSON)."""
        return self.path / METRICS_FILE

    @property
    def per_task_path(self) -> Path:
        """The per-task log-likelihoods of the evaluation splits."""
        return self.path / PER_TASK_FILE

    @property
    def train_log_path(self) -> Path:
        """Output of the run when trained in a process of its own."""
        return self.path / TRAIN_LOG

    @property
    def evaluate_log_path(self) -> Path:
        """Output of the run when evaluated in a process of its own."""
        return self.path / EVALUATE_LOG

    def config(self) -> DictConfig:
        """The config the run was started with (``config.yaml``).

        Raises:
            MissingFileError: If the directory holds no config: it is not a training run.
        """
        if not self.config_path.is_file():
            raise MissingFileError(
                f"{self.path} is not a training run: {self.config_path} does not exist"
            )
        return OmegaConf.load(self.config_path)

    def recorded_config(self) -> dict[str, Any] | None:
        """The resolved config the run was trained (or started) with; None if new."""
        record = self.training_record()
        if "config" in record:
            return record["config"]
        if not self.config_path.is_file():
            return None
        return OmegaConf.to_container(OmegaConf.load(self.config_path))

    def training_record(self) -> dict[str, Any]:
        """``training.json`` (training seconds, finished config); ``{}`` if unfinished."""
        path = self.training_record_path
        return json.loads(path.read_text()) if path.is_file() else {}

    def training_log(self) -> list[dict[str, str]]:
        """Rows of the run's CSV logs, over every (re)start in order."""
        logs = sorted(
            self.log_dir.glob("version_*/metrics.csv"),
            key=lambda p: int(p.parent.name.removeprefix("version_")),
        )
        rows = []
        for path in logs:
            with path.open() as f:
                rows.extend(csv.DictReader(f))
        return rows

    def is_trained(self) -> bool:
        """Whether training finished: the record holds its config and the model is saved."""
        return "config" in self.training_record() and self.model_path.is_dir()

    def load_model(self, map_location: str | torch.device = "cpu") -> NeuralProcess:
        """The trained model (see :func:`aenp.load`)."""
        return load(self.model_path, map_location)

    def experiment(self) -> Experiment:
        """The experiment the run was trained on, rebuilt from its config.

        A model saved with a normalisation (climate) lends it to the experiment, which then
        need not fit it again: for a field larger than memory, a full pass over its training
        split.
        """
        saved = None
        if self.model_path.is_dir():
            saved = load_config(self.model_path).get("metadata", {}).get("normalisation")
        if saved is None:
            return experiment_from_config(self.config())
        from aenp.data.climate import Normalisation  # xarray, only for climate runs

        normalisation = Normalisation.from_dict(saved)
        return experiment_from_config(self.config(), normalisation=normalisation)

    def results(self) -> dict[str, Any]:
        """The evaluation results that ``metrics.json`` holds, a metric without a value as NaN.

        Raises:
            MissingFileError: If the run has not been evaluated.
        """
        if not self.metrics_path.is_file():
            raise MissingFileError(
                f"{self.path} holds no evaluation: {self.metrics_path} does not exist "
                f"(run `aenp evaluate {self.path}`)"
            )
        results = json.loads(self.metrics_path.read_text())
        for metrics in results["splits"].values():
            for figures in metrics.values():
                for name in ("mean", "stderr"):
                    if figures[name] is None:
                        figures[name] = float("nan")
        return results

    def per_task_loglik(self) -> dict[str, np.ndarray]:
        """The per-task log-likelihoods ``{split: [num_tasks]}`` that evaluation wrote."""
        with np.load(self.per_task_path) as arrays:
            return dict(arrays)

    def write_config(self, cfg: DictConfig) -> None:
        """Writes the resolved ``cfg`` as the run's config, creating the directory."""
        self.path.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.config_path) as partial:
            OmegaConf.save(cfg, partial, resolve=True)

    def save_model(self, model: NeuralProcess, metadata: dict[str, Any]) -> None:
        """Saves the trained model with ``metadata`` (see :func:`aenp.save`)."""
        save(model, self.model_path, metadata=metadata)

    def write_training_record(self, seconds: float, config: dict[str, Any]) -> None:
        """Records that training finished, after ``seconds`` in all, with ``config``."""
        write_json(self.training_record_path, {"seconds": seconds, "config": config})

    def write_results(self, metrics: dict[str, Any], per_task_loglik: dict[str, Any]) -> None:
        """Writes evaluation ``metrics`` and per-task log-likelihoods ``{split: [num_tasks]}``."""
        write_json(self.metrics_path, metrics)
        with atomic_write(self.per_task_path) as partial:
            np.savez(partial, **per_task_loglik)
