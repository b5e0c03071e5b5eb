"""Training runs driven by a Hydra config: build, fit, checkpoint, resume, save."""

from __future__ import annotations

import copy
import csv
import json
import logging
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf

from aenp.data.experiments import Experiment, get_experiment
from aenp.models.io import save
from aenp.models.neural_process import NeuralProcess
from aenp.models.registry import build_model
from aenp.train.data import TaskDataModule
from aenp.train.module import NeuralProcessModule

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
CONFIG_NAME = "train"
RUN_CONFIG = "config.yaml"
MODEL_DIR = "model"
TRAINING_RECORD = "training.json"
LOG_DIR = "logs"
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT = "best"
LAST_CHECKPOINT = "last"
PRESENTATION_KEYS = ("resume", "trainer.enable_progress_bar", "trainer.log_every_n_steps")
"""Config entries that do not change what a run trains (a finished run ignores them)."""

log = logging.getLogger(__name__)


def compose_config(overrides: list[str] = ()) -> DictConfig:
    """The training config with Hydra overrides applied (as ``aenp train`` would build it)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=CONFIG_NAME, overrides=list(overrides))


def experiment_from_config(cfg: DictConfig) -> Experiment:
    """The experiment a config names, built with its ``experiment.options``."""
    options = cfg.experiment.get("options")
    options = {} if options is None else OmegaConf.to_container(options, resolve=True)
    return get_experiment(cfg.experiment.name, **options)


def build_from_config(cfg: DictConfig) -> NeuralProcess:
    """The model a config describes, sized by the experiment's ``dim_x`` and ``dim_y``."""
    hparams = OmegaConf.to_container(cfg.model.hparams, resolve=True)
    return build_model(cfg.model.key, cfg.experiment.dim_x, cfg.experiment.dim_y, **hparams)


def _precision(setting: str) -> str:
    if setting != "auto":
        return setting
    return "bf16-mixed" if torch.cuda.is_available() else "32-true"


def train(cfg: DictConfig) -> Path:
    """Trains the configured model; returns the run directory.

    The run directory receives ``config.yaml`` (the resolved config), ``checkpoints/``
    (``best.ckpt`` by validation log-likelihood and ``last.ckpt``), CSV logs, and ``model/``
    (the best weights, saved with :func:`aenp.save`) and ``training.json`` (the training time
    and the config it finished with). A run killed part-way resumes from ``last.ckpt`` when
    started again with the same ``run_dir``, logging to a new ``logs/version_<k>``; a finished
    run started again with the same config is left as it is.
    """
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = training_record(run_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    finished = record.get("config")
    if (
        finished is not None
        and _trained_alike(finished, resolved)
        and (run_dir / MODEL_DIR).is_dir()
    ):
        log.info("%s is already trained with this config", run_dir)
        return run_dir
    start = time.perf_counter()
    # Sharp attention and small Adam statistics produce subnormal floats, which are ~50x
    # slower on x86 CPUs; flushing them to zero changes nothing measurable.
    torch.set_flush_denormal(True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    experiment = experiment_from_config(cfg)
    model = build_from_config(cfg)
    module = NeuralProcessModule(model, **cfg.optimizer)
    data = TaskDataModule(
        sample=experiment.sample_train,
        validation=[
            item.batch
            for item in experiment.split("val", cfg.data.num_val_tasks, cfg.data.batch_size)
        ],
        num_train_tasks=cfg.data.num_train_tasks,
        batch_size=cfg.data.batch_size,
        seed=cfg.seed,
    )
    checkpoints = ModelCheckpoint(
        dirpath=run_dir / CHECKPOINT_DIR,
        filename=BEST_CHECKPOINT,
        monitor="val/loglik",
        mode="max",
        enable_version_counter=False,
    )
    # Unmonitored, it keeps the latest epoch whether or not it improved (``save_last`` would
    # only copy the checkpoints that the monitored one saves).
    latest = ModelCheckpoint(
        dirpath=run_dir / CHECKPOINT_DIR, filename=LAST_CHECKPOINT, enable_version_counter=False
    )
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_args["precision"] = _precision(trainer_args["precision"])
    trainer = L.Trainer(
        **trainer_args,
        default_root_dir=run_dir,
        callbacks=[checkpoints, latest],
        logger=CSVLogger(run_dir, name=LOG_DIR),
        reload_dataloaders_every_n_epochs=1,
    )
    if trainer.is_global_zero:
        OmegaConf.save(cfg, run_dir / RUN_CONFIG, resolve=True)
    resume = cfg.resume
    last = run_dir / CHECKPOINT_DIR / f"{LAST_CHECKPOINT}.ckpt"
    if resume is None and last.is_file():
        resume = last
        log.info("Resuming from %s", last)
    trainer.fit(module, datamodule=data, ckpt_path=resume)
    if trainer.is_global_zero:
        best = Path(checkpoints.best_model_path or last)
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
        metadata = {"experiment": experiment.name}
        normalisation = getattr(experiment, "normalisation", None)
        if normalisation is not None:
            metadata["normalisation"] = normalisation.to_dict()
        save(model.float().cpu(), run_dir / MODEL_DIR, metadata=metadata)
        seconds = record.get("seconds", 0.0) + time.perf_counter() - start
        record = {"seconds": seconds, "config": resolved}
        (run_dir / TRAINING_RECORD).write_text(json.dumps(record, indent=2))
    return run_dir


def _trained_alike(first: dict, second: dict) -> bool:
    """Whether two resolved configs train the same model (presentation entries aside)."""

    def substance(config: dict) -> dict:
        config = copy.deepcopy(config)
        for key in PRESENTATION_KEYS:
            *parents, leaf = key.split(".")
            node = config
            for parent in parents:
                node = node.get(parent, {})
            node.pop(leaf, None)
        return config

    return substance(first) == substance(second)


def training_record(run_dir: Path) -> dict:
    """``training.json`` of a run (training seconds, finished config); ``{}`` if unfinished."""
    path = Path(run_dir) / TRAINING_RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


def training_log(run_dir: Path) -> list[dict[str, str]]:
    """Rows of a run's CSV logs, over every (re)start in order."""
    logs = sorted(
        (Path(run_dir) / LOG_DIR).glob("version_*/metrics.csv"),
        key=lambda p: int(p.parent.name.removeprefix("version_")),
    )
    rows = []
    for path in logs:
        with path.open() as f:
            rows.extend(csv.DictReader(f))
    return rows
