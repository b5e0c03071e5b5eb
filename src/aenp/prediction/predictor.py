"""From a trained model and data to predictions: :func:`load_predictor` and :func:`predict`."""

from __future__ import annotations

import os

import pandas as pd
import xarray as xr

from aenp.data.climate import Normalisation
from aenp.errors import InputError
from aenp.models.io import load, load_config
from aenp.models.neural_process import NeuralProcess
from aenp.prediction.elevation import Elevation, with_elevation
from aenp.prediction.extrapolation import warn_if_extrapolating
from aenp.prediction.gridded import predict_gridded
from aenp.prediction.inputs import INPUTS, context_tasks, grid_axes, target_points
from aenp.prediction.output import prediction_dataset, prediction_table
from aenp.prediction.points import predict_points
from aenp.run_directory import model_directory

DEFAULT_CHUNK_SIZE = 65_536
"""Target points per forward pass."""


def load_predictor(path: str | os.PathLike) -> tuple[NeuralProcess, Normalisation]:
    """A trained model and the normalisation saved with it, from a run or model directory.

    Raises:
        FileNotFoundError: If there is no saved model.
        ValueError: If the model was saved without a normalisation (not trained on climate
            data): pass one to :func:`predict` instead.
    """
    directory = model_directory(path)
    params = load_config(directory).get("metadata", {}).get("normalisation")
    if params is None:
        raise InputError(
            f"the model at {directory} was saved without a normalisation (it was not trained "
            "on climate data); pass normalisation= to predict"
        )
    return load(directory), Normalisation.from_dict(params)


def predict(
    model: NeuralProcess | str | os.PathLike,
    context: xr.DataArray | xr.Dataset | pd.DataFrame,
    targets: xr.DataArray | xr.Dataset | pd.DataFrame,
    normalisation: Normalisation | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
    elevation: Elevation = None,
) -> xr.Dataset | pd.DataFrame:
    """Predictive mean and standard deviation at the targets, in the data's units.

    Args:
        model: A trained model, or the run (or model) directory it was saved in.
        context: Observations: a gridded field (NaN = unobserved) or a DataFrame of stations.
        targets: Where to predict: a grid or a DataFrame of coordinates.
        normalisation: How the model's training data were normalised; read from the model's
            directory when ``model`` is a path.
        chunk_size: Target points per forward pass.
        progress: Show a progress bar.
        elevation: For a 4-D model: surface elevation ``[lat, lon]`` in metres (interpolated
            bilinearly), or ``"terrain"`` for the built-in terrain map (cell means over a
            grid, point values at stations). A DataFrame's ``elevation`` column comes first.

    Returns:
        For grid targets, a Dataset with ``mean`` and ``std`` on the targets' coordinates (with
        the context's time steps for a 2-D model); for DataFrame targets, a copy with ``mean``
        and ``std`` columns.

    Raises:
        ValueError: For a missing normalisation, coordinate or value column, a table without
            rows or with non-numeric values, an empty context, non-finite coordinates, targets
            lacking the time a 3-D or 4-D model needs, points without elevation for a 4-D
            model, or (convolutional models) a target grid whose cells differ in size from the
            training cells.

    Warns:
        ExtrapolationWarning: If points lie far outside the training region or years.
        UserWarning: If context points off the target grid of a convolutional model are left
            out.
    """
    if not isinstance(model, NeuralProcess):
        model, saved = load_predictor(model)
        normalisation = normalisation or saved
    _check_options(model, normalisation, chunk_size, elevation)
    tasks = context_tasks(context, model.dim_x)
    points, grid = target_points(targets, model.dim_x)
    if model.dim_x == 4:
        tasks = [with_elevation(t, elevation, grid_axes(context)) for t in tasks]
        points = with_elevation(points, elevation, grid_axes(targets))
    warn_if_extrapolating([*tasks, points], normalisation)
    if grid is None and len(tasks) > 1:
        raise InputError(
            f"the context has {len(tasks)} time steps; for DataFrame targets a 2-D model "
            "needs one: select one, or give grid targets"
        )
    model.eval()
    if model.backbone.takes_grids:
        if grid is None:
            raise InputError(
                "convolutional models predict on a grid: give the targets as an xarray grid"
            )
        means, stds = predict_gridded(
            model, tasks, grid, points, normalisation, chunk_size, progress
        )
    else:
        means, stds = predict_points(model, tasks, points, normalisation, chunk_size, progress)
    if grid is None:
        return prediction_table(targets, means, stds)
    return prediction_dataset(grid, means, stds, tasks, model.dim_x)


def _check_options(
    model: NeuralProcess,
    normalisation: Normalisation | None,
    chunk_size: int,
    elevation: Elevation,
) -> None:
    """Refuses a missing normalisation, a bad chunk size, model or elevation source."""
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
