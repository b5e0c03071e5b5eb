"""Saving and loading models: safetensors weights and a JSON config, rebuilt by registry."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_weights
from safetensors.torch import save as save_weights
from torch import Tensor

from aenp.errors import AenpError, InputError, MissingFileError
from aenp.files import atomic_write
from aenp.models.neural_process import NeuralProcess
from aenp.models.registry import model_name, rebuild_model

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
CHECKSUM = "weights_sha256"
"""Field of the config holding the SHA-256 of the weights file saved with it."""


def save(model: NeuralProcess, directory: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Writes ``model.safetensors`` and then ``config.json`` to ``directory``.

    Each file is written atomically. The config records the weights' SHA-256, so a save
    interrupted between the two files leaves a pair that :func:`load` refuses, never new
    weights that load under the old config.

    Args:
        model: A model built by :func:`aenp.build_model` (optionally made approximate).
        directory: Folder to write; created if needed.
        metadata: Extra JSON-serialisable information stored with the config.

    Returns:
        The directory.
    """
    if not model.build_config:
        raise InputError("model has no build config; build it with aenp.build_model to save it")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError(
            f"{directory} is a file; a model is saved as a folder: choose another path"
        )
    weights = weights_bytes(model)
    config = {
        "format_version": FORMAT_VERSION,
        "name": model_name(model),
        **model.config,
        "metadata": metadata or {},
        CHECKSUM: hashlib.sha256(weights).hexdigest(),
    }
    # Serialised before anything is written, so bad metadata leaves the folder untouched.
    try:
        text = json.dumps(config, indent=2, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InputError(
            f"metadata must be JSON-serialisable (dicts, lists, strings, finite numbers): {error}"
        ) from error
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_write(directory / WEIGHTS_FILE) as tmp:
        tmp.write_bytes(weights)
    with atomic_write(directory / CONFIG_FILE) as tmp:
        tmp.write_text(text)
    return directory


def weights_bytes(model: NeuralProcess) -> bytes:
    """The model's weights serialised as the ``model.safetensors`` file holds them."""
    return save_weights({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})


def load_config(directory: str | os.PathLike) -> dict[str, Any]:
    """Reads and checks the ``config.json`` of a saved model."""
    path = Path(directory) / CONFIG_FILE
    if path.is_dir():
        raise InputError(f"{path} is a folder; a saved model's config is a JSON file")
    if not path.is_file():
        raise MissingFileError(f"no saved model at {directory}: {path} does not exist")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise InputError(f"{path} must hold a JSON object, got {type(config).__name__}")
    missing = [k for k in ("key", "dim_x", "dim_y", "hparams") if k not in config]
    if missing:
        raise InputError(f"{path} lacks required field(s) {missing}")
    if config.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"{path} has format_version {config.get('format_version')!r}; "
            f"this version of aenp reads {FORMAT_VERSION}"
        )
    for field in ("hparams", "approximate"):
        if field in config and not isinstance(config[field], dict):
            raise InputError(
                f"{path}: field {field!r} must be a mapping of hyper-parameters, got "
                f"{config[field]!r}"
            )
    return config


def load(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> NeuralProcess:
    """Rebuilds a model saved by :func:`save` and loads its weights exactly.

    Raises:
        FileNotFoundError: If the config or weights file is missing.
        ValueError: If a file is corrupt, the weights are not those the config was saved with
            (checksum), do not match the config's model (missing, unexpected or mis-shaped
            tensors) or hold NaN or infinite values, or ``map_location`` is not a device this
            machine has; nothing is loaded partially.
    """
    device = available_device(map_location, "map_location")
    config = load_config(directory)
    config_path = Path(directory) / CONFIG_FILE
    try:
        model = rebuild_model(config)
    except AenpError as error:
        raise type(error)(f"{config_path} describes a model aenp cannot build: {error}") from error
    path = Path(directory) / WEIGHTS_FILE
    if path.is_dir():
        raise InputError(f"{path} is a folder; a saved model's weights are a safetensors file")
    if not path.is_file():
        raise MissingFileError(f"no weights at {directory}: {path} does not exist")
    data = path.read_bytes()
    # Saves older than the checksum have none; they load as before.
    if CHECKSUM in config and hashlib.sha256(data).hexdigest() != config[CHECKSUM]:
        raise InputError(
            f"{path} is not the weights file {config_path} was saved with (its SHA-256 differs): "
            "a save was interrupted between the two files, or one was replaced; save the model "
            "again"
        )
    try:
        weights = load_weights(data)
    except SafetensorError as error:
        raise InputError(f"{path} is not a readable safetensors file: {error}") from error
    problems = weight_mismatches(model.state_dict(), weights)
    if problems:
        raise InputError(
            f"{path} does not match the {config['name']!r} model of {CONFIG_FILE}: {problems}"
        )
    non_finite = [
        k for k, v in weights.items() if v.is_floating_point() and not bool(v.isfinite().all())
    ]
    if non_finite:
        raise InputError(
            f"{path} holds NaN or infinite values in {_listed(non_finite)}, so the model cannot "
            "predict: its training diverged or the file was altered; retrain or restore it"
        )
    dtype = next(iter(weights.values())).dtype
    model = model.to(dtype=dtype)
    model.load_state_dict(weights, strict=True)
    return model.to(device)


def available_device(setting: str | torch.device, argument: str) -> torch.device:
    """``setting`` as a device, if this machine can place tensors there.

    Raises:
        InputError: Naming ``argument`` (the setting's name), if ``setting`` is no device or
            one this machine does not have.
    """
    try:
        device = torch.device(setting)
    except (RuntimeError, TypeError) as error:
        raise InputError(
            f"{argument} must name a device such as 'cpu' or 'cuda', got {setting!r}"
        ) from error
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        raise InputError(
            f"{argument} {setting!r} is not available on this machine ({error}); "
            f"use {argument}='cpu'"
        ) from error
    return device


def weight_mismatches(expected: dict[str, Tensor], given: dict[str, Tensor]) -> str:
    """The missing, unexpected and mis-shaped tensors of ``given``, listed; ``""`` if none."""
    problems = [f"missing {k}" for k in expected.keys() - given.keys()]
    problems += [f"unexpected {k}" for k in given.keys() - expected.keys()]
    problems += [
        f"{k} has shape {tuple(given[k].shape)}, expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and given[k].shape != v.shape
    ]
    return _listed(problems) if problems else ""


def _listed(names: list[str], limit: int = 10) -> str:
    """The first ``limit`` of ``names``, sorted, and how many more there are."""
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return "; ".join(sorted(names)[:limit]) + more
