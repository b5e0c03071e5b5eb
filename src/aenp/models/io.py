"""Saving and loading models: safetensors weights and a JSON config, rebuilt by registry."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from aenp.errors import InputError, MissingFileError
from aenp.models.neural_process import NeuralProcess
from aenp.models.registry import model_name, rebuild_model

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


def save(model: NeuralProcess, directory: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Writes ``config.json`` and ``model.safetensors`` to ``directory``.

    Each file is written to a temporary name first and then moved into place, so an
    interrupted save never leaves a half-written model behind.

    Args:
        model: A model built by :func:`aenp.build_model` (optionally made approximate).
        directory: Folder to write; created if needed.
        metadata: Extra JSON-serialisable information stored with the config.

    Returns:
        The directory.
    """
    if not model.config:
        raise InputError("model has no build config; build it with aenp.build_model to save it")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "format_version": FORMAT_VERSION,
        "name": model_name(model),
        **model.config,
        "metadata": metadata or {},
    }
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _write_atomically(directory / WEIGHTS_FILE, lambda tmp: save_file(weights, tmp))
    _write_atomically(
        directory / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2))
    )
    return directory


def load_config(directory: str | os.PathLike) -> dict[str, Any]:
    """Reads and checks the ``config.json`` of a saved model."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise MissingFileError(f"no saved model at {directory}: {path} does not exist")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not valid JSON: {error}") from error
    missing = [k for k in ("key", "dim_x", "dim_y", "hparams") if k not in config]
    if missing:
        raise InputError(f"{path} lacks required field(s) {missing}")
    if config.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"{path} has format_version {config.get('format_version')!r}; "
            f"this version of aenp reads {FORMAT_VERSION}"
        )
    return config


def load(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> NeuralProcess:
    """Rebuilds a model saved by :func:`save` and loads its weights exactly.

    Raises:
        FileNotFoundError: If the config or weights file is missing.
        ValueError: If a file is corrupt or the weights do not match the config's model
            (missing, unexpected or mis-shaped tensors); nothing is loaded partially.
    """
    config = load_config(directory)
    model = rebuild_model(config)
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise MissingFileError(f"no weights at {directory}: {path} does not exist")
    try:
        weights = load_file(path, device=str(map_location))
    except (SafetensorError, OSError) as error:
        raise InputError(f"{path} is not a readable safetensors file: {error}") from error
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected.keys() - weights.keys()]
    problems += [f"unexpected {k}" for k in weights.keys() - expected.keys()]
    problems += [
        f"{k} has shape {tuple(weights[k].shape)}, expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights and weights[k].shape != v.shape
    ]
    if problems:
        raise InputError(
            f"{path} does not match the {config['name']!r} model of {CONFIG_FILE}: "
            + "; ".join(sorted(problems)[:10])
            + (f" (and {len(problems) - 10} more)" if len(problems) > 10 else "")
        )
    dtype = next(iter(weights.values())).dtype
    model = model.to(device=map_location, dtype=dtype)
    model.load_state_dict(weights, strict=True)
    return model


def _write_atomically(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
