"""Training runs driven by a Hydra config: build, fit, checkpoint, resume, save."""

from __future__ import annotations

import inspect
import logging
import math
import numbers
import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.precision import DoublePrecision
from omegaconf import DictConfig, OmegaConf

from aenp.batch import Batch, GridBatch
from aenp.data.experiments import EXPERIMENTS, Experiment
from aenp.errors import InputError, InputTypeError, MissingFileError
from aenp.files import atomic_write
from aenp.models.neural_process import NeuralProcess
from aenp.models.registry import build_model
from aenp.run_directory import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    LOG_DIR,
    RunDirectory,
    experiment_from_config,
)

# A run directory's file names moved to aenp.run_directory; they stay importable from here.
from aenp.run_directory import CHECKPOINT_DIR as CHECKPOINT_DIR
from aenp.run_directory import MODEL_DIR as MODEL_DIR
from aenp.run_directory import RUN_CONFIG as RUN_CONFIG
from aenp.run_directory import TRAINING_RECORD as TRAINING_RECORD
from aenp.train.cpu import configure_cpu
from aenp.train.data import TaskDataModule, refuse_training_in_a_starting_worker
from aenp.train.model_configs import register_model_configs
from aenp.train.module import NeuralProcessModule, compiles

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
CONFIG_NAME = "train"
PROGRESS_EVERY_N_STEPS = 10
"""Steps between progress-bar updates."""
PRESENTATION_KEYS = (
    "run_dir",
    "resume",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "trainer.compile",
    "data.num_workers",
)
"""Config entries that do not change what a run trains (only how fast, or how it is shown): a
run started again may change them."""

log = logging.getLogger(__name__)

register_model_configs()


def compose_config(overrides: list[str] = ()) -> DictConfig:
    """The training config with Hydra overrides applied (as ``aenp train`` would build it)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=CONFIG_NAME, overrides=list(overrides))


def build_from_config(cfg: DictConfig) -> NeuralProcess:
    """The model a config describes, sized by the experiment's ``dim_x`` and ``dim_y``."""
    hparams = OmegaConf.to_container(cfg.model.hparams, resolve=True)
    return build_model(cfg.model.key, cfg.experiment.dim_x, cfg.experiment.dim_y, **hparams)


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


PRECISIONS = {
    "auto": "auto",
    "32-true": "32-true",
    "32": "32-true",
    "64-true": "64-true",
    "64": "64-true",
    "bf16-mixed": "bf16-mixed",
    "bf16": "bf16-mixed",
    "16-mixed": "16-mixed",
    "16": "16-mixed",
}
"""``trainer.precision`` settings, with Lightning's short names, and what each one means.

Not among them: Lightning's ``bf16-true`` and ``16-true``, which keep the weights themselves in
half precision (AdamW's small updates then round away), and Transformer Engine's settings.
"""
POSITIVE_INTEGER = ("a positive integer", _is_integer, lambda value: value >= 1)
SETTINGS: dict[str, tuple[str, Callable[[Any], bool], Callable[[Any], bool]]] = {
    "seed": ("an integer in [0, 2**32 - 1]", _is_integer, lambda value: 0 <= value < 2**32),
    "data.batch_size": POSITIVE_INTEGER,
    "data.num_train_tasks": POSITIVE_INTEGER,
    "data.num_val_tasks": POSITIVE_INTEGER,
    "data.num_test_tasks": POSITIVE_INTEGER,
    "optimizer.lr": (
        "a finite number > 0",
        _is_number,
        lambda value: math.isfinite(value) and value > 0,
    ),
    "optimizer.weight_decay": (
        "a finite number >= 0",
        _is_number,
        lambda value: math.isfinite(value) and value >= 0,
    ),
    "optimizer.warmup_steps": (
        "an integer >= 0",
        _is_integer,
        lambda value: value >= 0,
    ),
    "optimizer.cosine_schedule": (
        "true or false",
        lambda value: isinstance(value, bool),
        lambda value: True,
    ),
    "trainer.max_epochs": (
        "a positive integer, or -1 to train until trainer.max_time",
        _is_integer,
        lambda value: value >= 1 or value == -1,
    ),
    "trainer.precision": (
        "auto, 32-true, 64-true, bf16-mixed or 16-mixed (half-precision weights, as "
        "bf16-true and 16-true keep them, are not trained)",
        lambda value: isinstance(value, str | int) and not isinstance(value, bool),
        lambda value: str(value) in PRECISIONS,
    ),
}
"""Training settings checked before a run starts: (what is expected, type check, range check).

Hydra does not type command-line values (``data.batch_size=abc`` is a string), and Lightning
would silently change an out-of-range seed or train no epoch at all.
"""


def check_settings(cfg: DictConfig) -> None:
    """Checks the training settings of :data:`SETTINGS`.

    Raises:
        InputTypeError: If a setting has the wrong type; the message names its key.
        InputError: If a setting is out of range.
    """
    for key, (expected, has_type, in_range) in SETTINGS.items():
        value = OmegaConf.select(cfg, key)
        if not has_type(value):
            raise InputTypeError(
                f"{key} must be {expected}, got {value!r} ({type(value).__name__})"
            )
        if not in_range(value):
            raise InputError(f"{key} must be {expected}, got {value!r}")


def local_checkpoint(resume: Any) -> Path:
    """The absolute path of the ``resume=`` checkpoint, which must be a local file.

    Raises:
        InputError: If ``resume`` is a URL (``https://``, ``s3://``, ``file://``, any fsspec
            protocol): Lightning would download and unpickle it, which can run code.
        MissingFileError: If the file does not exist.
    """
    text = str(resume)
    if "://" in text or "::" in text:
        raise InputError(
            f"resume must be a local checkpoint file, got the URL {text!r}: aenp does not load "
            "remote checkpoints; download the file and pass its local path"
        )
    path = Path(text).expanduser().absolute()
    if not path.is_file():
        raise MissingFileError(f"resume checkpoint {text} does not exist or is not a file")
    # Absolute, so that Lightning never reads a file name as one of its keywords ("last", ...).
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """A training checkpoint, read weights-only: tensors and plain values, never code.

    Tensors load onto ``map_location`` (by default the CPU, as Lightning's reader does, so a
    checkpoint written on a GPU reads anywhere).

    Raises:
        MissingFileError: If ``path`` is not a file.
        InputError: If the file is truncated or corrupt, holds objects that are not tensors or
            plain values, or is not a Lightning checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {path} does not exist or is not a file")
    try:
        with open(path, "rb") as f:
            checkpoint = torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        detail = str(error).partition("WeightsUnpickler error: ")[2].split(". ")[0]
        raise InputError(
            f"checkpoint {path} holds objects that are not tensors or plain values ({detail}); "
            "aenp reads checkpoints weights-only and never runs code from a file"
        ) from None
    except (RuntimeError, OSError, EOFError, IndexError, KeyError, ValueError) as error:
        # What torch's reader raises for a truncated or garbled file.
        raise InputError(
            f"checkpoint {path} cannot be read ({str(error) or type(error).__name__}); it was "
            "probably cut short by a killed process or a full disk: delete it (the run then "
            "starts over), or resume from another checkpoint with resume=PATH (a run keeps "
            f"{BEST_CHECKPOINT}.ckpt beside {LAST_CHECKPOINT}.ckpt)"
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise InputError(f"{path} is not a training checkpoint (it has no 'state_dict')")
    return checkpoint


class LocalCheckpointIO(TorchCheckpointIO):
    """Checkpoints as local files, written atomically and read weights-only.

    Lightning's own writer stages a checkpoint in the system's temporary folder and moves it
    over, which copies (and can leave a truncated file) when that folder is on another disk;
    its reader downloads URLs and unpickles them.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        """Writes ``checkpoint`` so that ``path`` holds either the old or the whole new one."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as partial:
            torch.save(checkpoint, partial)

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Any = "cpu", weights_only: bool | None = None
    ) -> dict[str, Any]:
        """:func:`load_checkpoint`, weights-only whatever Lightning asks for."""
        return load_checkpoint(path, map_location)


def _precision(setting: str | int) -> str:
    """The precision ``trainer.precision`` trains in: ``auto`` is bf16-mixed on a GPU."""
    precision = PRECISIONS[str(setting)]
    if precision != "auto":
        return precision
    return "bf16-mixed" if torch.cuda.is_available() else "32-true"


class Float64Precision(DoublePrecision):
    """Lightning's float64 training (``64-true``), for aenp's batches.

    Lightning casts a batch by setting its fields one by one, which the frozen
    :class:`~aenp.batch.Batch` and :class:`~aenp.batch.GridBatch` refuse; they cast
    themselves (their masks stay boolean).
    """

    def convert_input(self, data: Any) -> Any:
        """``data`` with its floating-point tensors in float64."""
        if isinstance(data, Batch | GridBatch):
            return data.to(torch.float64)
        return super().convert_input(data)


def _strategy(setting: Any, gridded: bool) -> Any:
    """The Lightning strategy for ``trainer.strategy``, on ``gridded`` batches or point sets.

    ``ddp`` tolerates unused parameters where the batches are gridded: a model given them
    (climate, smoke2d) skips its set convolutions, whose lengthscales then get no gradient,
    and plain DDP stops at the first step. Finding them costs a walk of the autograd graph
    every step, which a step on point sets (gp1d), where every model's parameters all get
    gradients (``aenp.testing.ModelContract``), does not pay. ``ddp_find_unused_parameters_true``
    and ``..._false`` choose either way.
    """
    if setting == "ddp" and gridded:
        return "ddp_find_unused_parameters_true"
    return setting


def padded_context_size(setting: Any, experiment: Experiment, compiled: bool) -> int | None:
    """Context size training batches are padded to for ``data.pad_context``.

    ``auto`` pads a compiled step's batches to the experiment's largest context set (its
    ``max_num_context``; None for gridded experiments, whose batches have one shape already),
    so that it sees one shape; an eager step gains nothing from padding and does the work of
    the padding points, so its batches stay as drawn. ``false`` does not pad; an integer pads
    to that size.
    """
    if setting == "auto":
        return experiment.max_num_context if compiled else None
    if setting is False:
        return None
    if not _is_integer(setting) or setting < 1:
        raise InputError(
            f"data.pad_context must be auto, false or a positive integer, got {setting!r}"
        )
    return setting


def sampling_workers(setting: Any) -> int:
    """Worker processes for ``data.num_workers``.

    ``auto`` is one when the machine has a core that torch's threads leave free (sampling then
    overlaps the step), else none: a worker competing with them for a core slows the step's
    oneDNN kernels more than sampling in-process costs.
    """
    if setting == "auto":
        return 1 if (os.cpu_count() or 1) > torch.get_num_threads() else 0
    return setting


def train(cfg: DictConfig) -> Path:
    """Trains the configured model; returns the run directory.

    The run directory receives ``config.yaml`` (the resolved config), ``checkpoints/``
    (``best.ckpt`` by validation log-likelihood and ``last.ckpt``), CSV logs, and ``model/``
    (the best weights, saved with :func:`aenp.save`) and ``training.json`` (the training time
    and the config it finished with). A run killed part-way resumes from ``last.ckpt`` when
    started again with the same ``run_dir``, logging to a new ``logs/version_<k>``; a finished
    run started again with the same config is left as it is. A run directory holds the model
    of one config: starting it again with another (:data:`PRESENTATION_KEYS` aside) is refused
    before anything is written.

    Raises:
        InputError: If a setting is out of range, ``resume`` is a URL or not a readable
            checkpoint, ``run_dir`` holds a run of another config (the message lists the
            differing keys, old → new), or a starting sampling worker runs the script that
            calls this function at its top level.
        InputTypeError: If a setting has the wrong type.
        MissingFileError: If the ``resume`` checkpoint does not exist.
    """
    refuse_training_in_a_starting_worker()
    check_settings(cfg)
    resume = None if cfg.resume is None else local_checkpoint(cfg.resume)
    run = RunDirectory(cfg.run_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    _refuse_another_config(run, resolved)
    if run.is_trained():
        log.info("%s is already trained with this config", run.path)
        return run.path
    start = time.perf_counter()
    configure_cpu()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    experiment = experiment_from_config(cfg)
    model = build_from_config(cfg)
    trainer, best = _trainer(cfg, run, experiment)
    compile_loss = compiles(cfg.trainer.compile, trainer.strategy.root_device)
    module = NeuralProcessModule(model, **cfg.optimizer, compile=compile_loss, seed=cfg.seed)
    data = _task_data(cfg, experiment, compile_loss)
    if trainer.is_global_zero:
        run.write_config(cfg)
    trainer.fit(module, datamodule=data, ckpt_path=_resume_from(resume, run))
    if trainer.is_global_zero:
        _save_best_model(run, module, best, experiment)
        seconds = run.training_record().get("seconds", 0.0) + time.perf_counter() - start
        run.write_training_record(seconds, resolved)
    return run.path


def _refuse_another_config(run: RunDirectory, resolved: dict[str, Any]) -> None:
    """Raises :class:`InputError` if ``run`` holds a run of a config other than ``resolved``."""
    recorded = run.recorded_config()
    changes = [] if recorded is None else config_changes(recorded, resolved)
    if changes:
        raise InputError(
            f"{run.path} holds a run of another config ({'; '.join(changes)}); a run "
            "directory holds the model of one config: train into another directory, or "
            "delete this one to start over"
        )


def _trainer(
    cfg: DictConfig, run: RunDirectory, experiment: Experiment
) -> tuple[L.Trainer, ModelCheckpoint]:
    """The Lightning trainer of a run on ``experiment``, and its best-checkpoint callback."""
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    del trainer_args["compile"]  # compiles the loss, which the module does
    precision = _precision(trainer_args.pop("precision"))
    plugins = [LocalCheckpointIO()]
    if precision == "64-true":
        plugins.append(Float64Precision())
    else:
        trainer_args["precision"] = precision
    gridded = experiment.max_num_context is None
    trainer_args["strategy"] = _strategy(trainer_args["strategy"], gridded)
    best = ModelCheckpoint(
        dirpath=run.checkpoint_dir,
        filename=BEST_CHECKPOINT,
        monitor="val/loglik",
        mode="max",
        enable_version_counter=False,
    )
    # Unmonitored, it keeps the latest epoch whether or not it improved (``save_last`` would
    # only copy the checkpoints that the monitored one saves).
    latest = ModelCheckpoint(
        dirpath=run.checkpoint_dir, filename=LAST_CHECKPOINT, enable_version_counter=False
    )
    callbacks = [best, latest]
    if trainer_args["enable_progress_bar"]:
        # The bar reads the loss from the device: updating it every step would make every step
        # wait for the device.
        callbacks.append(TQDMProgressBar(refresh_rate=PROGRESS_EVERY_N_STEPS))
    trainer = L.Trainer(
        **trainer_args,
        default_root_dir=run.path,
        callbacks=callbacks,
        logger=CSVLogger(run.path, name=LOG_DIR),
        plugins=plugins,
        reload_dataloaders_every_n_epochs=1,
    )
    return trainer, best


def _task_data(cfg: DictConfig, experiment: Experiment, compiled: bool) -> TaskDataModule:
    """The experiment's training and validation tasks, as the config's ``data`` sets them."""
    validation = experiment.split("val", cfg.data.num_val_tasks, cfg.data.batch_size)
    return TaskDataModule(
        sample=experiment.sample_train,
        validation=[item.batch for item in validation],
        num_train_tasks=cfg.data.num_train_tasks,
        batch_size=cfg.data.batch_size,
        seed=cfg.seed,
        num_context=padded_context_size(cfg.data.pad_context, experiment, compiled),
        num_workers=sampling_workers(cfg.data.num_workers),
    )


def _resume_from(resume: Path | None, run: RunDirectory) -> Path | None:
    """The checkpoint training resumes from: ``resume``, else the run's last one, if any."""
    if resume is None and run.last_checkpoint.is_file():
        log.info("Resuming from %s", run.last_checkpoint)
        return run.last_checkpoint
    return resume


def _save_best_model(
    run: RunDirectory, module: NeuralProcessModule, best: ModelCheckpoint, experiment: Experiment
) -> None:
    """Saves the model of the best checkpoint (else of the last one) in ``run``.

    In the dtype it trained in: float64 for ``trainer.precision=64-true``, else float32.
    """
    path = Path(best.best_model_path or run.last_checkpoint)
    if not path.is_file():
        raise InputError(
            f"training stopped before its first checkpoint, so {run.path} holds no model: "
            "give it time for at least one epoch (trainer.max_time, trainer.max_steps)"
        )
    module.load_state_dict(load_checkpoint(path)["state_dict"])
    metadata = {"experiment": experiment.name}
    if experiment.normalisation is not None:
        metadata["normalisation"] = experiment.normalisation.to_dict()
    run.save_model(module.model.cpu(), metadata)


_ABSENT = object()
"""Stands for a config entry that one of two configs does not have."""


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}`` (lists are values)."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old → new`` for every entry in which two resolved configs differ.

    Entries of :data:`PRESENTATION_KEYS` are left out: they do not change what a run trains.
    Nor is an experiment or optimizer option that ``old`` lacks and ``new`` sets to its
    default: an option added to aenp after ``old`` was recorded (such as climate's
    ``max_in_memory_bytes`` or ``optimizer.warmup_steps``), so that runs recorded before it can
    be resumed and skipped.
    """
    old, new = _flatten(_with_added_options(old, new)), _flatten(new)

    def shown(value: Any) -> str:
        return "(absent)" if value is _ABSENT else repr(value)

    return [
        f"{key}: {shown(old.get(key, _ABSENT))} → {shown(new.get(key, _ABSENT))}"
        for key in sorted(old.keys() | new.keys())
        if key not in PRESENTATION_KEYS and old.get(key, _ABSENT) != new.get(key, _ABSENT)
    ]


def _with_added_options(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` with the options it lacks that ``new`` sets to their defaults.

    Experiment options default as the experiment's constructor, optimizer options as
    :class:`NeuralProcessModule`'s.
    """
    experiment = (new.get("experiment") or {}).get("name")
    sections = {("optimizer",): NeuralProcessModule}
    if experiment in EXPERIMENTS:
        sections["experiment", "options"] = EXPERIMENTS[experiment]
    for path, takes_options in sections.items():
        recorded, given = _section(old, path), _section(new, path)
        if recorded is None or given is None:
            continue
        defaults = inspect.signature(takes_options).parameters
        added = {
            name: value
            for name, value in given.items()
            if name not in recorded
            and name in defaults
            and defaults[name].default is not inspect.Parameter.empty
            and value == defaults[name].default
        }
        old = _with_section(old, path, {**recorded, **added})
    return old


def _section(config: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    """The mapping at ``path`` in a nested config, or None."""
    for key in path:
        config = config.get(key) if isinstance(config, dict) else None
    return config if isinstance(config, dict) else None


def _with_section(config: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of a nested config with ``value`` at ``path``."""
    head, *rest = path
    return {**config, head: _with_section(config[head], tuple(rest), value) if rest else value}


def recorded_config(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run directory's :meth:`~aenp.run_directory.RunDirectory.recorded_config`."""
    return RunDirectory(run_dir).recorded_config()


def training_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run directory's :meth:`~aenp.run_directory.RunDirectory.training_record`."""
    return RunDirectory(run_dir).training_record()


def training_log(run_dir: str | os.PathLike) -> list[dict[str, str]]:
    """The run directory's :meth:`~aenp.run_directory.RunDirectory.training_log`."""
    return RunDirectory(run_dir).training_log()
