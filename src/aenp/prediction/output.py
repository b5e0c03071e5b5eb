"""Predictions laid out like the targets: on their grid, or as columns of their table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from aenp.data.climate import coordinate_names
from aenp.prediction.inputs import GRID_DIMS


def prediction_dataset(
    grid: xr.DataArray | xr.Dataset,
    means: list[np.ndarray],
    stds: list[np.ndarray],
    tasks: list[pd.DataFrame],
    dim_x: int,
) -> xr.Dataset:
    """A Dataset of ``mean`` and ``std`` on the target grid's own coordinates ``[time,] lat, lon``.

    A 2-D model predicts once per context time step: with several, the Dataset gets a time
    dimension named as the grid's (or ``time``), holding the context's time steps.
    """
    coords = prediction_coords(grid, [t["time"].iloc[0] for t in tasks], dim_x)
    shape = tuple(len(v) for v in coords.values())
    dims = list(coords)
    data = {
        name: (dims, np.stack(values).reshape(shape))
        for name, values in (("mean", means), ("std", stds))
    }
    return xr.Dataset(data, coords=coords)


def prediction_coords(
    grid: xr.DataArray | xr.Dataset, task_times: list | np.ndarray, dim_x: int
) -> dict[str, np.ndarray]:
    """The coordinates of a prediction on a grid by dimension, in order.

    ``task_times`` are the time steps of the tasks; see :func:`prediction_dataset`.
    """
    names = coordinate_names(grid)
    coords = {names[d]: grid[names[d]].values for d in GRID_DIMS[dim_x]}
    if dim_x == 2 and len(task_times) > 1:
        coords = {names.get("time", "time"): task_times, **coords}
    return coords


def prediction_table(
    targets: pd.DataFrame, means: list[np.ndarray], stds: list[np.ndarray]
) -> pd.DataFrame:
    """A copy of the target rows with ``mean`` and ``std`` columns (of the one task)."""
    table = targets.copy()
    table["mean"], table["std"] = means[0], stds[0]
    return table
