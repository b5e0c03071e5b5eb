"""Inference with convolutional models: the context on the target grid, every cell predicted.

The grid's axes are sorted and padded with unobserved cells to the sizes the CNN accepts;
every context point goes to the nearest cell (cells with several are averaged; points more
than half a cell outside the grid are left out). A 4-D model gets the target cells' elevation
as its extra input. Tasks go through in chunks of about ``chunk_size`` cells.

A large grid can also be predicted a window at a time (:func:`predict_window`, which
:func:`~aenp.prediction.streaming.predict_to_zarr` uses): a cell's prediction depends on the
data within the CNN's receptive field only (:func:`receptive_halo`), so a window holding a
block of cells and that many cells around it, starting on a multiple of the U-Net's
``resolution_multiple``, predicts the block as the whole grid does.
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
from aenp.grid import Grid, is_evenly_spaced
from aenp.models.neural_process import NeuralProcess
from aenp.prediction.inputs import GRID_DIMS
from aenp.prediction.model_inputs import model_coordinate

CELL_SIZE_RTOL = 1e-3
"""Relative difference tolerated between the target grid's and the training cells' sizes
(coordinates stored in float32 differ by about 1e-7)."""

Window = tuple[slice, ...]
"""Cells of the padded model grid, one range per input, each starting at 0 or a multiple of the
CNN's ``resolution_multiple`` and ending at one or at the grid's padded end."""


@dataclass(frozen=True)
class ModelGrid:
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

    @property
    def whole(self) -> Window:
        """The window of every cell."""
        return tuple(slice(0, n) for n in self.shape)

    def target_mask(self) -> np.ndarray:
        """Which cells ``[*shape]`` are the target grid's (not padding)."""
        mask = np.zeros(self.shape, dtype=bool)
        mask[tuple(slice(0, n) for n in self.sizes)] = True
        return mask

    def cell_index(self, i: int, values: np.ndarray, normalisation: Normalisation) -> np.ndarray:
        """Index ``[n]`` of the nearest cell along input ``i`` of coordinates as stored."""
        x = model_coordinate(self.dims[i], values, normalisation)
        axis = self.axes[i]
        step = axis[1] - axis[0] if len(axis) > 1 else 1.0
        return np.rint((x - axis[0]) / step).astype(int)

    def nearest_cells(
        self, task: pd.DataFrame, normalisation: Normalisation
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Each point's nearest cell (indices ``[n]`` per input), and whether it is on the grid.

        A point is on the grid ``[n]`` if it lies within half a cell of a target cell.
        """
        index, inside = [], np.ones(len(task), dtype=bool)
        for i, (d, n) in enumerate(zip(self.dims, self.sizes, strict=True)):
            k = self.cell_index(i, task[d].to_numpy(), normalisation)
            inside &= (k >= 0) & (k < n)
            index.append(k)
        return index, inside

    def sorted_positions(self) -> list[np.ndarray]:
        """Per input, where each cell of the target grid ``[size]`` lies on the sorted axis."""
        return [np.argsort(o) for o in self.orders]

    def in_target_order(self, values: np.ndarray) -> np.ndarray:
        """Values ``[*shape]`` at the target grid's cells, in its own order, ``[cells]``."""
        return values[np.ix_(*self.sorted_positions())].ravel()


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
    target_grid = model_grid(grid, model, normalisation)
    y, observed, on_grid = context_on_grid(tasks, target_grid, normalisation, target_grid.whole)
    check_context_placement(on_grid, sum(map(len, tasks)), stacklevel=3)  # the caller of predict
    extra = None
    if model.dim_x == 4:
        metres = points["elevation"].to_numpy(dtype=float).reshape(target_grid.sizes)[0]
        extra = cell_elevation(metres, target_grid, normalisation)
    tasks_per_pass = max(1, chunk_size // int(np.prod(target_grid.shape)))
    with torch.no_grad():
        mean, std = _grid_predictions(
            model, y, observed, target_grid, target_grid.whole, extra, tasks_per_pass, progress
        )
    means = [normalisation.denormalise_values(target_grid.in_target_order(m)) for m in mean]
    stds = [normalisation.denormalise_std(target_grid.in_target_order(s)) for s in std]
    return means, stds


def predict_window(
    model: NeuralProcess,
    tasks: list[pd.DataFrame],
    target_grid: ModelGrid,
    window: Window,
    extra: Float[Tensor, "*grid 1"] | None,
    normalisation: Normalisation,
    chunk_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Predictive means and standard deviations ``[tasks, *window]`` on a window of the grid.

    Args:
        model: A convolutional model.
        tasks: Context points per task (columns time, lat, lon, value); those off the window
            are left out.
        target_grid: The whole grid.
        window: The cells to predict, sorted as the grid's axes.
        extra: The elevation of every cell of the whole grid (4-D models), else None.
        normalisation: How the model's training data were normalised.
        chunk_size: About how many cells go through the model at once.
    """
    y, observed, _ = context_on_grid(tasks, target_grid, normalisation, window)
    tasks_per_pass = max(1, chunk_size // int(np.prod(y.shape[1:])))
    with torch.no_grad():
        mean, std = _grid_predictions(
            model, y, observed, target_grid, window, extra, tasks_per_pass, progress=False
        )
    return normalisation.denormalise_values(mean), normalisation.denormalise_std(std)


def model_grid(
    grid: xr.DataArray | xr.Dataset, model: NeuralProcess, normalisation: Normalisation
) -> ModelGrid:
    """The target grid's axes in model units, sorted and padded to the sizes the CNN accepts.

    Raises:
        InputError: If an axis is unevenly spaced or its cells differ in size from the
            training cells.
    """
    multiple = model.backbone.resolution_multiple
    names = coordinate_names(grid)
    axes, orders = [], []
    for d in GRID_DIMS[model.dim_x]:
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
    return ModelGrid(GRID_DIMS[model.dim_x], axes, orders)


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


def context_on_grid(
    tasks: list[pd.DataFrame], target_grid: ModelGrid, normalisation: Normalisation, window: Window
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised context values ``[tasks, *window]`` (0 where unobserved) and where observed.

    Several points in a cell are averaged; points off the target grid or the window are left
    out. Also returns how many points of each task ``[tasks]`` lie on the target grid.
    """
    shape = tuple(w.stop - w.start for w in window)
    sums = np.zeros((len(tasks), *shape))
    counts = np.zeros_like(sums)
    on_grid = np.zeros(len(tasks), dtype=int)
    for i, task in enumerate(tasks):
        index, inside = target_grid.nearest_cells(task, normalisation)
        on_grid[i] = inside.sum()
        for k, w in zip(index, window, strict=True):
            inside &= (k >= w.start) & (k < w.stop)
        cell = (
            np.full(inside.sum(), i),
            *(k[inside] - w.start for k, w in zip(index, window, strict=True)),
        )
        np.add.at(sums, cell, normalisation.normalise_values(task["value"].to_numpy()[inside]))
        np.add.at(counts, cell, 1.0)
    observed = counts > 0
    return np.where(observed, sums / np.maximum(counts, 1), 0.0), observed, on_grid


def check_context_placement(on_grid: np.ndarray, num_points: int, stacklevel: int) -> None:
    """Refuses a task without context on the grid; warns of points left out.

    Args:
        on_grid: Context points on the target grid, per task ``[tasks]``.
        num_points: Context points of all tasks.
        stacklevel: Where the warning points, as for ``warnings.warn`` called by the
            caller of this function.

    Raises:
        InputError: If no context point of a task lies on the target grid.

    Warns:
        UserWarning: If context points lie off the grid.
    """
    empty = np.flatnonzero(on_grid == 0)
    if len(empty):
        raise InputError(f"no context point of task {empty[0]} lies on the target grid")
    num_left_out = num_points - int(on_grid.sum())
    if num_left_out:
        warnings.warn(
            f"{num_left_out} of {num_points} context points lie more than half a cell outside "
            "the target grid and are left out; extend the targets to use them",
            stacklevel=stacklevel + 1,
        )


def cell_elevation(
    metres: np.ndarray, target_grid: ModelGrid, normalisation: Normalisation
) -> Float[Tensor, "time lat lon 1"]:
    """Normalised elevation of every cell of a (time, lat, lon) grid; padding copies the edge.

    Args:
        metres: Elevation of the target grid's cells ``[lat, lon]``, in its own order.
        target_grid: The grid.
        normalisation: How the model's training data were normalised.
    """
    sizes = target_grid.sizes
    metres = metres[np.ix_(*target_grid.orders[1:])]
    padding = [(0, padded - n) for padded, n in zip(target_grid.shape[1:], sizes[1:], strict=True)]
    z = normalisation.normalise_input("elevation", np.pad(metres, padding, mode="edge"))
    z = torch.as_tensor(z)
    return z[None, ..., None].expand(target_grid.shape[0], *z.shape, 1)


def receptive_halo(model: NeuralProcess, target_grid: ModelGrid) -> tuple[int, ...]:
    """Per input, how many cells away from a cell the data its prediction depends on can lie.

    Measured rather than derived from the CNN's layers, so it holds for every backbone: NaN
    values on a block of cells in the middle of a probe grid reach exactly the predictions
    that depend on them (NaN survives every product, even with a zero weight). The block is
    one ``resolution_multiple`` wide, so it holds a cell of each phase of the U-Net's pooling;
    the halo is the farthest reach beyond it plus its width less one, since the reach is
    measured from its edges rather than from each cell. The probe doubles until the NaN stop
    short of its ends; at the grid's padded size the halo is that size (the whole axis).
    Other axes of the probe are one block wide.
    """
    multiple = model.backbone.resolution_multiple
    dtype = next(model.parameters()).dtype
    halo = []
    for i, padded in enumerate(target_grid.shape):
        length = 4 * multiple
        while True:
            shape = [multiple] * len(target_grid.shape)
            shape[i] = length
            start = length // 2 // multiple * multiple
            y = torch.zeros(1, *shape, model.dim_y, dtype=dtype)
            y.narrow(1 + i, start, multiple).fill_(float("nan"))
            nan = _probe(model, target_grid, y).movedim(1 + i, 0).flatten(1).any(1)
            reach = np.flatnonzero(nan.numpy())
            if reach[0] > 0 and reach[-1] < length - 1:
                beyond = max(start - reach[0], reach[-1] - (start + multiple - 1))
                halo.append(int(beyond) + multiple - 1)
                break
            if length >= padded:
                halo.append(padded)
                break
            length *= 2
    return tuple(halo)


def _probe(model: NeuralProcess, target_grid: ModelGrid, y: Tensor) -> Tensor:
    """Which predictions ``[1, *grid]`` of the values ``y [1, *grid, dy]`` are NaN."""
    axes = tuple(
        torch.as_tensor(a[0] + (a[1] - a[0] if len(a) > 1 else 1.0) * np.arange(n))
        for a, n in zip(target_grid.axes, y.shape[1:-1], strict=True)
    )
    extra_inputs = model.dim_x - len(axes)
    extra = y.new_zeros(*y.shape[1:-1], extra_inputs) if extra_inputs else None
    observed = torch.ones(y.shape[:-1], dtype=torch.bool)
    with torch.no_grad():
        features = model.backbone.forward_grid(y, observed, Grid(axes), extra)
    return features.isnan().any(-1)


def window_around(
    positions: list[np.ndarray], halo: tuple[int, ...], target_grid: ModelGrid, multiple: int
) -> Window:
    """The window that predicts the cells at ``positions`` (per input, on the sorted axis).

    It reaches ``halo`` cells beyond them, widened to start and end on multiples of
    ``multiple`` (or at the padded grid's ends), where the CNN's pooling aligns with the whole
    grid's.
    """
    return tuple(
        slice(
            max(0, (p.min() - h) // multiple * multiple),
            min(n, -(-(p.max() + 1 + h) // multiple) * multiple),
        )
        for p, h, n in zip(positions, halo, target_grid.shape, strict=True)
    )


def _grid_predictions(
    model: NeuralProcess,
    y: np.ndarray,
    observed: np.ndarray,
    target_grid: ModelGrid,
    window: Window,
    extra: Tensor | None,
    tasks_per_pass: int,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised means and stds ``[tasks, *window]`` for the tasks ``y``, a few at a time."""
    # Everything goes in as float64: the model casts values to its own dtype and places
    # float64 positions on its lattice exactly.
    axes = tuple(torch.as_tensor(a[w]) for a, w in zip(target_grid.axes, window, strict=True))
    target = torch.as_tensor(target_grid.target_mask()[window])
    extra = None if extra is None else extra[window]
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
        means.append(pred.mean[..., 0].double().numpy())
        stds.append(pred.stddev[..., 0].double().numpy())
    return np.concatenate(means), np.concatenate(stds)
