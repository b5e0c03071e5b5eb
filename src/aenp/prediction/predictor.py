"""From a trained model and data to predictions: :func:`predict`."""

from __future__ import annotations

import os

import pandas as pd
import xarray as xr

from aenp.data.climate import Normalisation
from aenp.errors import InputError
from aenp.models.neural_process import NeuralProcess
from aenp.prediction.elevation import Elevation, with_elevation
from aenp.prediction.extrapolation import warn_if_extrapolating
from aenp.prediction.gridded import predict_gridded
from aenp.prediction.inputs import context_tasks, grid_axes, target_points
from aenp.prediction.output import prediction_dataset, prediction_table
from aenp.prediction.points import predict_points
from aenp.prediction.preparation import DEFAULT_CHUNK_SIZE, prepared_model
from aenp.prediction.streaming import predict_to_zarr


def predict(
    model: NeuralProcess | str | os.PathLike,
    context: xr.DataArray | xr.Dataset | pd.DataFrame,
    targets: xr.DataArray | xr.Dataset | pd.DataFrame,
    normalisation: Normalisation | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
    elevation: Elevation = None,
    out: str | os.PathLike | None = None,
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
        out: For a prediction larger than memory: a new ``.zarr`` path, written block by block
            and resumably by :func:`~aenp.prediction.streaming.predict_to_zarr`.

    Returns:
        For grid targets, a Dataset with ``mean`` and ``std`` on the targets' coordinates (with
        the context's time steps for a 2-D model), in memory, or with ``out`` the store opened
        lazily; for DataFrame targets, a copy with ``mean`` and ``std`` columns.

    Raises:
        ValueError: For a missing normalisation, coordinate or value column, a table without
            rows or with non-numeric values, an empty context, non-finite coordinates, targets
            lacking the time a 3-D or 4-D model needs, points without elevation for a 4-D
            model, a model on another device than the CPU (prediction runs there), or
            (convolutional models) a target grid whose cells differ in size from the training
            cells.

    Warns:
        ExtrapolationWarning: If points lie far outside the training region or years.
        UserWarning: If context points off the target grid of a convolutional model are left
            out.
    """
    if out is not None:
        options = {"chunk_size": chunk_size, "progress": progress, "elevation": elevation}
        return xr.open_zarr(predict_to_zarr(model, context, targets, out, normalisation, **options))
    model, normalisation = prepared_model(model, normalisation, chunk_size, elevation)
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
