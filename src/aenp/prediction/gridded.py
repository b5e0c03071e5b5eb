"""Inference with convolutional models: the context on the target grid, every cell predicted.

The grid's axes are sorted and padded with unobserved cells to the sizes the CNN accepts;
every context point goes to the nearest cell (cells with several are averaged; points more
than half a cell outside the grid are left out). A 4-D model gets the target cells' elevation
as its extra input. Tasks go through in chunks of about ``chunk_size`` cells.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import xarray as xr
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from aenp.batch import GridBatch
from aenp.data.climate import Normalisation, coordinate_names
from aenp.errors import InputError
from aenp.grid import is_evenly_spaced
from aenp.models.neural_process import NeuralProcess
from aenp.prediction.inputs import GRID_DIMS
from aenp.prediction.model_inputs import model_coordinate

CELL_SIZE_RTOL = 1e-3
"""Relative difference tolerated between the target grid's and the training cells' sizes
(coordinates stored in float32 differ by about 1e-7)."""


@dataclass(frozen=True)
class _ModelGrid:
    """The target grid in model units, as the CNN takes it.

    Attributes:
        dims: Its inputs, e.g. ``["lat", "lon"]``.
        axes: Per input, evenly spaced positions ``[padded size]``, ascending: the target
            grid's sorted axis, then padding cells up to a size the CNN accepts.
        orders: Per input, the order ``[size]`` that sorts the target grid's own axis.
    """

    dims: list[str]
    axes: list[np.ndarray]
    orders: list[np.ndarray]

    @property
    def shape(self) -> tuple[int, ...]:
        """Cells along each input, padding included."""
        return tuple(len(a) for a in self.axes)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Cells of the target grid along each input."""
        return tuple(len(o) for o in self.orders)

    def target_mask(self) -> np.ndarray:
        """Which cells ``[*shape]`` are the target grid's (not padding)."""
        mask = np.zeros(self.shape, dtype=bool)
        mask[tuple(slice(0, n) for n in self.sizes)] = True
        return mask

    def nearest_cells(
        self, task: pd.DataFrame, normalisation: Normalisation
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Each point's nearest cell (indices ``[n]`` per input), and whether it is on the grid.

        A point is on the grid ``[n]`` if it lies within half a cell of a target cell.
        """
        index, inside = [], np.ones(len(task), dtype=bool)
        for d, axis, n in zip(self.dims, self.axes, self.sizes, strict=True):
            x = model_coordinate(d, task[d].to_numpy(), normalisation)
            step = axis[1] - axis[0] if len(axis) > 1 else 1.0
            k = np.rint((x - axis[0]) / step).astype(int)
            inside &= (k >= 0) & (k < n)
            index.append(k)
        return index, inside

    def in_target_order(self, values: np.ndarray) -> np.ndarray:
        """Values ``[*shape]`` at the target grid's cells, in its own order, ``[cells]``."""
        return values[np.ix_(*(np.argsort(o) for o in self.orders))].ravel()


def predict_gridded(
    model: NeuralProcess,
    tasks: list[pd.DataFrame],
    grid: xr.DataArray | xr.Dataset,
    points: pd.DataFrame,
    normalisation: Normalisation,
    chunk_size: int,
    progress: bool,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Predictive means and standard deviations ``[cells]`` on the target grid, per task.

    Args:
        model: A convolutional model.
        tasks: Context points per task (columns time, lat, lon, value).
        grid: The target grid.
        points: Its cells as rows; with an elevation column for a 4-D model.
        normalisation: How the model's training data were normalised.
        chunk_size: About how many cells go through the model at once.
        progress: Show a progress bar.

    Raises:
        InputError: If an axis of the grid is unevenly spaced, its cells differ in size from
            the training cells, or no context point of a task lies on it.

    Warns:
        UserWarning: If context points off the grid are left out.
    """
    multiple = model.backbone.resolution_multiple
    model_grid = _model_grid(grid, GRID_DIMS[model.dim_x], normalisation, multiple)
    y, observed = _context_on_grid(tasks, model_grid, normalisation)
    extra = _cell_elevation(points, model_grid, normalisation) if model.dim_x == 4 else None
    tasks_per_pass = max(1, chunk_size // int(np.prod(model_grid.shape)))
    with torch.no_grad():
        return _predict_in_chunks(
            model, y, observed, model_grid, extra, tasks_per_pass, normalisation, progress
        )


def _model_grid(
    grid: xr.DataArray | xr.Dataset, dims: list[str], normalisation: Normalisation, multiple: int
) -> _ModelGrid:
    """The target grid's axes in model units, sorted and padded to a multiple of ``multiple``."""
    names = coordinate_names(grid)
    axes, orders = [], []
    for d in dims:
        values = model_coordinate(d, grid[names[d]].values, normalisation)
        order = np.argsort(values)
        axis = values[order]
        if not is_evenly_spaced(torch.as_tensor(axis)):
            raise InputError(f"convolutional models need an evenly spaced target grid; {d} is not")
        step = np.diff(axis).mean() if len(axis) > 1 else 1.0
        if len(axis) > 1:
            _check_cell_size(d, step, normalisation)
        padded = -(-len(axis) // multiple) * multiple
        axes.append(axis[0] + step * np.arange(padded))
        orders.append(order)
    return _ModelGrid(dims, axes, orders)


def _check_cell_size(dim: str, step: float, normalisation: Normalisation) -> None:
    """Refuses a target grid step (model units) unlike the training cells' (if recorded).

    Raises:
        InputError: If the latitude or longitude steps differ by more than
            :data:`CELL_SIZE_RTOL`.
    """
    trained = {"lat": normalisation.lat_step, "lon": normalisation.lon_step}.get(dim)
    if trained is None:
        return
    degrees = step * normalisation.coord_scale
    if not np.isclose(degrees, trained, rtol=CELL_SIZE_RTOL, atol=0):
        name = {"lat": "latitude", "lon": "longitude"}[dim]
        raise InputError(
            f"convolutional models predict on cells of the training data's size: the target "
            f"grid's {name} spacing is {degrees:.6g}°, the training cells' {trained:.6g}°; "
            f"give targets on a grid of {trained:.6g}° in {name}"
        )


def _context_on_grid(
    tasks: list[pd.DataFrame], model_grid: _ModelGrid, normalisation: Normalisation
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised context values ``[tasks, *shape]`` (0 where unobserved) and where observed.

    Several points in a cell are averaged; points off the grid are left out, with a warning.
    """
    sums = np.zeros((len(tasks), *model_grid.shape))
    counts = np.zeros_like(sums)
    num_left_out = 0
    for i, task in enumerate(tasks):
        index, inside = model_grid.nearest_cells(task, normalisation)
        if not inside.any():
            raise InputError(f"no context point of task {i} lies on the target grid")
        num_left_out += int((~inside).sum())
        cell = (np.full(inside.sum(), i), *(k[inside] for k in index))
        np.add.at(sums, cell, normalisation.normalise_values(task["value"].to_numpy()[inside]))
        np.add.at(counts, cell, 1.0)
    if num_left_out:
        warnings.warn(
            f"{num_left_out} of {sum(map(len, tasks))} context points lie more than half a "
            "cell outside the target grid and are left out; extend the targets to use them",
            stacklevel=4,  # the caller of predict
        )
    observed = counts > 0
    return np.where(observed, sums / np.maximum(counts, 1), 0.0), observed


def _cell_elevation(
    points: pd.DataFrame, model_grid: _ModelGrid, normalisation: Normalisation
) -> Float[Tensor, "time lat lon 1"]:
    """Normalised elevation of every cell of a (time, lat, lon) grid; padding copies the edge."""
    sizes = model_grid.sizes
    metres = points["elevation"].to_numpy(dtype=float).reshape(sizes)[0]
    metres = metres[np.ix_(*model_grid.orders[1:])]
    padding = [(0, padded - n) for padded, n in zip(model_grid.shape[1:], sizes[1:], strict=True)]
    z = normalisation.normalise_input("elevation", np.pad(metres, padding, mode="edge"))
    z = torch.as_tensor(z)
    return z[None, ..., None].expand(model_grid.shape[0], *z.shape, 1)


def _predict_in_chunks(
    model: NeuralProcess,
    y: np.ndarray,
    observed: np.ndarray,
    model_grid: _ModelGrid,
    extra: Tensor | None,
    tasks_per_pass: int,
    normalisation: Normalisation,
    progress: bool,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The model's predictions ``[cells]`` for the tasks ``y [tasks, *shape]``, a few at a time."""
    # Everything goes in as float64: the model casts values to its own dtype and places
    # float64 positions on its lattice exactly.
    axes = tuple(torch.as_tensor(a) for a in model_grid.axes)
    target = torch.as_tensor(model_grid.target_mask())
    means, stds = [], []
    for start in tqdm(range(0, len(y), tasks_per_pass), disable=not progress, desc="predict"):
        stop = min(start + tasks_per_pass, len(y))
        batch = GridBatch(
            torch.as_tensor(y[start:stop, ..., None]),
            torch.as_tensor(observed[start:stop]),
            target.expand(stop - start, *target.shape),
            axes,
            extra,
        )
        pred = model(batch)
        for mean, std in zip(pred.mean[..., 0], pred.stddev[..., 0], strict=True):
            mean, std = (model_grid.in_target_order(v.double().numpy()) for v in (mean, std))
            means.append(normalisation.denormalise_values(mean))
            stds.append(normalisation.denormalise_std(std))
    return means, stds
