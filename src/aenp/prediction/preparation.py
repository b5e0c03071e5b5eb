"""What every prediction starts with: the trained model, its normalisation, checked options."""

from __future__ import annotations

import os

from aenp.data.climate import Normalisation
from aenp.errors import InputError
from aenp.models.io import load, load_config
from aenp.models.neural_process import NeuralProcess
from aenp.prediction.elevation import Elevation
from aenp.prediction.inputs import INPUTS
from aenp.run_directory import model_directory

DEFAULT_CHUNK_SIZE = 65_536
"""Target points per forward pass."""


def load_predictor(path: str | os.PathLike) -> tuple[NeuralProcess, Normalisation]:
    """A trained model and the normalisation saved with it, from a run or model directory.

    Raises:
        FileNotFoundError: If there is no saved model.
        ValueError: If the model was saved without a normalisation (not trained on climate
            data): pass one to :func:`~aenp.prediction.predictor.predict` instead.
    """
    directory = model_directory(path)
    params = load_config(directory).get("metadata", {}).get("normalisation")
    if params is None:
        raise InputError(
            f"the model at {directory} was saved without a normalisation (it was not trained "
            "on climate data); pass normalisation= to predict"
        )
    return load(directory), Normalisation.from_dict(params)


def prepared_model(
    model: NeuralProcess | str | os.PathLike,
    normalisation: Normalisation | None,
    chunk_size: int,
    elevation: Elevation,
) -> tuple[NeuralProcess, Normalisation]:
    """The model (loaded if given as a directory) and its normalisation, the options checked.

    Raises:
        InputError: For a missing normalisation, a chunk size below 1, a model of other than
            2, 3 or 4 inputs or on another device than the CPU, or an elevation source other
            than a field or ``"terrain"``.
    """
    if not isinstance(model, NeuralProcess):
        model, saved = load_predictor(model)
        normalisation = normalisation or saved
    if normalisation is None:
        raise InputError("predict needs the normalisation the model was trained with")
    if chunk_size < 1:
        raise InputError(f"chunk_size must be positive, got {chunk_size}")
    if model.dim_x not in INPUTS:
        raise InputError(
            f"predict needs a model of 2-D, 3-D or 4-D inputs, got dim_x={model.dim_x}"
        )
    if model.dim_x == 4 and isinstance(elevation, str) and elevation != "terrain":
        raise InputError(f"elevation must be a DataArray, 'terrain' or None, got {elevation!r}")
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise InputError(
            f"predict runs the model on the CPU, and this one is on {device}: pass model.cpu()"
        )
    return model, normalisation
