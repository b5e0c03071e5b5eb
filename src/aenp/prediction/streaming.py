"""Predictions larger than memory, written to zarr a block at a time: :func:`predict_to_zarr`.

The prediction (``mean`` and ``std`` on the target grid, laid out as :func:`aenp.predict`
returns it) is cut into blocks of ``block_time`` time steps by ``block_side`` cells along
latitude and longitude, one zarr chunk each. A block reads only the context it needs, is
predicted, written and marked finished before the next starts, so memory stays bounded
whatever the sizes; a run interrupted at any point resumes from its finished blocks
(:mod:`~aenp.prediction.store`).

How a block is predicted keeps every value equal, to float rounding, to the prediction of the
whole grid at once:

* point-set models (the transformer NPs) predict each target from the context alone, so a
  block is its own targets, conditioned on the whole context of its tasks;
* convolutional models predict every cell of a grid together, and a cell depends on the data
  within the CNN's receptive field. A block is predicted on a window of the grid that reaches
  that far beyond it (:func:`~aenp.prediction.gridded.receptive_halo`), aligned with the
  U-Net's pooling, and only the block is kept. Along an axis shorter than the receptive field
  the window is the whole axis. For a 3-D model time is such an axis like latitude.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import dask.array
import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from aenp.data.climate import Normalisation, coordinate_names
from aenp.errors import InputError, InputTypeError
from aenp.models.io import weights_bytes
from aenp.models.neural_process import NeuralProcess
from aenp.prediction.elevation import Elevation, with_elevation
from aenp.prediction.extrapolation import warn_if_extrapolating
from aenp.prediction.gridded import (
    ModelGrid,
    Window,
    cell_elevation,
    check_context_placement,
    model_grid,
    predict_window,
    receptive_halo,
    window_around,
)
from aenp.prediction.inputs import (
    COORDINATE_COLUMNS,
    GRID_DIMS,
    checked_grid,
    grid_axes,
    grid_points,
)
from aenp.prediction.output import prediction_coords
from aenp.prediction.points import predict_points
from aenp.prediction.preparation import DEFAULT_CHUNK_SIZE, prepared_model
from aenp.prediction.reader import (
    ContextSummary,
    FieldContext,
    Keep,
    StationContext,
    context_reader,
)
from aenp.prediction.store import PartialStore, check_out
from aenp.version import __version__

DEFAULT_BLOCK_TIME = 8
"""Time steps per block (and zarr chunk) of a prediction written to zarr."""
DEFAULT_BLOCK_SIDE = 512
"""Cells along latitude and along longitude per block (and zarr chunk)."""


@dataclass(frozen=True)
class _Block:
    """One block of the prediction.

    Attributes:
        name: Its indices along each dimension, e.g. ``"3-0-1"``.
        region: Its cells in the prediction's own dimensions.
        tasks: Which tasks it holds (the one task of a 3-D model, or of a single time step).
        cells: Its target-grid indices along each grid dimension (:data:`GRID_DIMS` order).
    """

    name: str
    region: tuple[slice, ...]
    tasks: slice
    cells: tuple[slice, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        """Cells along each of the prediction's dimensions."""
        return tuple(r.stop - r.start for r in self.region)


@dataclass(frozen=True)
class _Layout:
    """The prediction's dimensions, coordinates and blocks.

    Attributes:
        coords: The prediction's coordinates by dimension, in order (as :func:`aenp.predict`).
        chunks: Cells per block along each dimension.
        has_tasks: Whether the first dimension holds the tasks (a 2-D model, several steps).
    """

    coords: dict[str, np.ndarray]
    chunks: tuple[int, ...]
    has_tasks: bool

    @classmethod
    def of(
        cls,
        grid: xr.DataArray | xr.Dataset,
        task_times: np.ndarray,
        dim_x: int,
        block: dict[str, int],
    ) -> _Layout:
        """The layout of a prediction on ``grid``; ``block`` holds the sizes by time, lat, lon."""
        coords = prediction_coords(grid, task_times, dim_x)
        has_tasks = len(coords) > len(GRID_DIMS[dim_x])
        dims = ["time"] * has_tasks + GRID_DIMS[dim_x]
        return cls(coords, tuple(block[d] for d in dims), has_tasks)

    @property
    def shape(self) -> tuple[int, ...]:
        """Cells along each dimension."""
        return tuple(len(v) for v in self.coords.values())

    def template(self) -> xr.Dataset:
        """The prediction's coordinates and (unwritten) ``mean`` and ``std``, chunked by block."""
        empty = dask.array.empty(self.shape, chunks=self.chunks, dtype=np.float64)
        dims = list(self.coords)
        return xr.Dataset({v: (dims, empty) for v in ("mean", "std")}, coords=self.coords)

    def blocks(self) -> list[_Block]:
        """Every block, the first dimension slowest."""
        ranges = [range(0, n, c) for n, c in zip(self.shape, self.chunks, strict=True)]
        blocks = []
        for starts in itertools.product(*ranges):
            region = tuple(
                slice(s, min(s + c, n))
                for s, c, n in zip(starts, self.chunks, self.shape, strict=True)
            )
            name = "-".join(str(s // c) for s, c in zip(starts, self.chunks, strict=True))
            tasks = region[0] if self.has_tasks else slice(0, 1)
            blocks.append(_Block(name, region, tasks, region[self.has_tasks :]))
        return blocks


def predict_to_zarr(
    model: NeuralProcess | str | os.PathLike,
    context: xr.DataArray | xr.Dataset | pd.DataFrame,
    targets: xr.DataArray | xr.Dataset,
    out: str | os.PathLike,
    normalisation: Normalisation | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    block_time: int = DEFAULT_BLOCK_TIME,
    block_side: int = DEFAULT_BLOCK_SIDE,
    progress: bool = True,
    elevation: Elevation = None,
) -> Path:
    """Predicts on a target grid of any size, writing a zarr store block by block.

    The store at ``out`` holds what :func:`aenp.predict` returns for the same arguments
    (``mean`` and ``std`` on the targets' coordinates), chunked as the blocks. The context is
    read once in full first (to check it, count what lies off the grid and fingerprint it),
    then a block's time steps and region at a time; a field opened lazily (dask, or a file)
    is never loaded whole. Point-set models condition each block on the whole context of its
    tasks: all of it for a 3-D or 4-D model, which must then fit in memory.

    A run that stops (an error, Ctrl-C, a killed process) leaves its finished blocks in a
    folder beside ``out`` (see :mod:`~aenp.prediction.store`); the same call again skips
    them. With other inputs it is refused, naming what differs. ``out`` appears only once
    complete.

    Args:
        model: A trained model, or the run (or model) directory it was saved in.
        context: Observations: a gridded field (NaN = unobserved) or a DataFrame of stations.
        targets: The grid to predict on (its values are ignored).
        out: A new path ending in ``.zarr``.
        normalisation: How the model's training data were normalised; read from the model's
            directory when ``model`` is a path.
        chunk_size: About how many target cells go through the model at once.
        block_time: Time steps per block: tasks of a 2-D model, target times of a 3-D one.
        block_side: Target cells per block along latitude and along longitude.
        progress: Show progress bars (reading the context, then blocks).
        elevation: For a 4-D model, as for :func:`aenp.predict`.

    Returns:
        ``out``.

    Raises:
        InputError: As :func:`aenp.predict`; if ``out`` does not end in ``.zarr`` or exists,
            a block size is below 1, or an unfinished prediction to ``out`` has other inputs.
        InputTypeError: If ``targets`` is not an xarray grid.
        MissingFileError: If the folder that should hold ``out`` does not exist.

    Warns:
        ExtrapolationWarning: If points lie far outside the training region or years.
        UserWarning: If context points off the target grid of a convolutional model are left
            out.
    """
    model, normalisation = prepared_model(model, normalisation, chunk_size, elevation)
    if min(block_time, block_side) < 1:
        raise InputError(
            f"block_time and block_side must be positive, got {block_time} and {block_side}"
        )
    check_out(out)
    if not isinstance(targets, xr.DataArray | xr.Dataset):
        raise InputTypeError(
            "a zarr store holds a grid: give the targets as an xarray DataArray or Dataset, got "
            f"{type(targets).__name__}"
        )
    grid = checked_grid(targets, model.dim_x)
    reader = context_reader(context, model.dim_x, elevation)
    model.eval()
    target_grid = model_grid(grid, model, normalisation) if model.backbone.takes_grids else None
    summary = reader.summarise(_keep_on(target_grid, normalisation), progress)
    if not summary.points.any():
        raise InputError("the context has no observed (finite) value")
    # A 2-D model's tasks are the observed time steps; a 3-D model's one task is all of them.
    steps = np.flatnonzero(summary.points) if model.dim_x == 2 else np.arange(len(reader.times))
    names = coordinate_names(grid)
    target_axes = {d: grid[names[d]].values for d in GRID_DIMS[model.dim_x]}
    warn_if_extrapolating(
        [*_coordinate_frames(summary.coords), *_coordinate_frames(target_axes)], normalisation
    )
    if target_grid is not None:
        on_grid = summary.kept[steps] if model.dim_x == 2 else summary.kept.sum(keepdims=True)
        check_context_placement(on_grid, int(summary.points.sum()), stacklevel=2)
    block = {"time": block_time, "lat": block_side, "lon": block_side}
    layout = _Layout.of(grid, reader.times[steps], model.dim_x, block)
    store = PartialStore(
        out, _inputs(model, normalisation, summary, elevation, layout), layout.template()
    )
    metres = _target_elevation(grid, elevation) if model.dim_x == 4 else None
    if target_grid is not None:
        predict_block = _ConvolutionalBlocks(
            model, reader, steps, target_grid, metres, normalisation, chunk_size
        )
    else:
        predict_block = _PointBlocks(model, reader, steps, grid, metres, normalisation, chunk_size)
    blocks, done = layout.blocks(), store.done
    with tqdm(
        total=len(blocks), initial=len(done), disable=not progress, desc="predict", unit="block"
    ) as bar:
        for block in blocks:
            if block.name in done:
                continue
            mean, std = predict_block(block)
            data = {"mean": mean.reshape(block.shape), "std": std.reshape(block.shape)}
            store.write(block.name, block.region, data)
            bar.update()
    return store.finish()


class _ConvolutionalBlocks:
    """Predicts blocks with a convolutional model, each on a window around it."""

    def __init__(
        self,
        model: NeuralProcess,
        reader: FieldContext | StationContext,
        steps: np.ndarray,
        target_grid: ModelGrid,
        metres: np.ndarray | None,
        normalisation: Normalisation,
        chunk_size: int,
    ):
        self.model, self.reader, self.steps = model, reader, steps
        self.target_grid = target_grid
        self.normalisation, self.chunk_size = normalisation, chunk_size
        self.extra = None if metres is None else cell_elevation(metres, target_grid, normalisation)
        self.halo = receptive_halo(model, target_grid)
        self.positions = target_grid.sorted_positions()

    def __call__(self, block: _Block) -> tuple[np.ndarray, np.ndarray]:
        """Means and standard deviations ``[tasks, *cells]`` of the block."""
        positions = [p[c] for p, c in zip(self.positions, block.cells, strict=True)]
        window = window_around(
            positions, self.halo, self.target_grid, self.model.backbone.resolution_multiple
        )
        keep = _keep_on(self.target_grid, self.normalisation, window)
        tasks = _tasks(self.reader, self.steps, block.tasks, keep, self.model.dim_x)
        mean, std = predict_window(
            self.model,
            tasks,
            self.target_grid,
            window,
            self.extra,
            self.normalisation,
            self.chunk_size,
        )
        pick = np.ix_(
            np.arange(len(tasks)),
            *(p - w.start for p, w in zip(positions, window, strict=True)),
        )
        return mean[pick], std[pick]


class _PointBlocks:
    """Predicts blocks with a point-set model, each block's cells as its targets."""

    def __init__(
        self,
        model: NeuralProcess,
        reader: FieldContext | StationContext,
        steps: np.ndarray,
        grid: xr.DataArray | xr.Dataset,
        metres: np.ndarray | None,
        normalisation: Normalisation,
        chunk_size: int,
    ):
        self.model, self.reader, self.steps, self.grid = model, reader, steps, grid
        self.metres, self.normalisation, self.chunk_size = metres, normalisation, chunk_size
        self._cached: tuple[slice, list[pd.DataFrame]] | None = None

    def __call__(self, block: _Block) -> tuple[np.ndarray, np.ndarray]:
        """Means and standard deviations ``[tasks, cells]`` of the block."""
        # Consecutive blocks share their tasks: read them once.
        if self._cached is None or self._cached[0] != block.tasks:
            tasks = _tasks(self.reader, self.steps, block.tasks, None, self.model.dim_x)
            self._cached = (block.tasks, tasks)
        points = grid_points(self.grid, self.model.dim_x, block.cells)
        if self.metres is not None:
            # The same elevation at every time of the block.
            _, lat, lon = block.cells
            cells = self.metres[lat, lon]
            metres = np.broadcast_to(cells, (len(points) // cells.size, *cells.shape))
            points = points.assign(elevation=metres.ravel())
        means, stds = predict_points(
            self.model, self._cached[1], points, self.normalisation, self.chunk_size, False
        )
        return np.stack(means), np.stack(stds)


def _tasks(
    reader: FieldContext | StationContext,
    steps: np.ndarray,
    tasks: slice,
    keep: Keep | None,
    dim_x: int,
) -> list[pd.DataFrame]:
    """The context points of the tasks: one per step for a 2-D model, else all steps as one."""
    if dim_x > 2:
        return [reader.read(steps, keep)]
    frame = reader.read(steps[tasks], keep)
    # The rows come in step order.
    bounds = np.searchsorted(frame["step"].to_numpy(), [*steps[tasks], np.inf])
    return [frame.iloc[start:stop] for start, stop in itertools.pairwise(bounds)]


def _keep_on(
    target_grid: ModelGrid | None, normalisation: Normalisation, window: Window | None = None
) -> Keep:
    """Keeps the coordinates whose nearest cell lies in the window (default: the target grid)."""

    def keep(dim: str, values: np.ndarray) -> np.ndarray:
        if target_grid is None or dim not in target_grid.dims:
            return np.ones(len(values), dtype=bool)
        i = target_grid.dims.index(dim)
        cells = slice(0, target_grid.sizes[i]) if window is None else window[i]
        k = target_grid.cell_index(i, values, normalisation)
        return (k >= cells.start) & (k < min(cells.stop, target_grid.sizes[i]))

    return keep


def _target_elevation(grid: xr.DataArray | xr.Dataset, elevation: Elevation) -> np.ndarray:
    """Elevation (metres) of the target grid's cells ``[lat, lon]``, as :func:`aenp.predict`."""
    cells = grid_points(grid, 4, (slice(0, 1), slice(None), slice(None)))  # the first time
    metres = with_elevation(cells, elevation, grid_axes(grid))["elevation"].to_numpy(dtype=float)
    return metres.reshape(grid[coordinate_names(grid)["lat"]].size, -1)


def _coordinate_frames(coords: dict[str, np.ndarray]) -> list[pd.DataFrame]:
    """One frame per dimension of distinct coordinates, for :func:`warn_if_extrapolating`."""
    return [
        pd.DataFrame({d: pd.unique(np.asarray(coords[d]))}).reindex(
            columns=list(COORDINATE_COLUMNS)
        )
        for d in COORDINATE_COLUMNS
        if d in coords
    ]


def _inputs(
    model: NeuralProcess,
    normalisation: Normalisation,
    summary: ContextSummary,
    elevation: Elevation,
    layout: _Layout,
) -> dict[str, str]:
    """Digests of everything a prediction depends on, by name, to recognise it on resumption."""
    return {
        "aenp": __version__,
        "model": _digest(json.dumps(model.config, sort_keys=True), weights_bytes(model)),
        "normalisation": _digest(json.dumps(normalisation.to_dict(), sort_keys=True)),
        "context": summary.digest,
        "elevation": _elevation_digest(elevation) if model.dim_x == 4 else "",
        "targets": _digest(*(pd.util.hash_array(np.asarray(v)) for v in layout.coords.values())),
        "layout": _digest(json.dumps([list(layout.coords), layout.chunks])),
    }


def _elevation_digest(elevation: Elevation) -> str:
    """SHA-256 of an elevation field and its coordinates, or the name of the source."""
    if not isinstance(elevation, xr.DataArray):
        return str(elevation)
    arrays = [elevation.values, *(elevation[d].values for d in elevation.dims)]
    return _digest(*(pd.util.hash_array(np.asarray(a).ravel()) for a in arrays))


def _digest(*parts: str | bytes | np.ndarray) -> str:
    """SHA-256 of strings, bytes and arrays."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else bytes(part))
    return digest.hexdigest()
