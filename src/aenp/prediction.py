"""Prediction for scientists: xarray or pandas in, predictive mean and std in physical units out.

The context is a gridded field (an xarray DataArray or one-variable Dataset; NaN cells are
unobserved) or station observations (a pandas DataFrame with ``lat``, ``lon``, optionally
``time``, and one value column). The targets are a grid (any DataArray or Dataset with latitude
and longitude, and time for 3-D models; its values are ignored) or a DataFrame of coordinates.
Coordinates are recognised in the same conventions as :func:`aenp.data.climate.open_field`
(ERA5, WFDE5, WeatherBench2, 0-360 longitudes, descending latitudes), and the result carries
exactly the targets' own coordinates.

A 2-D model (inputs lat, lon) treats every time step of the context as one task; a 3-D model
(time, lat, lon) conditions on the whole context at once, as does a 4-D model (time, lat, lon,
elevation), which also needs the surface elevation of every point: an ``elevation`` column of
a DataFrame, else the ``elevation`` argument (a field in metres, or ``"terrain"`` for the
built-in terrain map, averaged over the cells of a grid). Point-set models (the transformer
NPs) take the targets in chunks, with a progress bar, so a large target grid never needs memory
for all of them at once. Convolutional models, trained on gridded data, predict on the target
grid itself, which must have the training data's cell size: the context is placed on its
nearest cells (points off the grid are left out, with a warning), and tasks go through in
chunks. Predicting far outside the training region or years gives a warning.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr
from tqdm.auto import tqdm

from aenp.data.batch import GridBatch
from aenp.data.climate import (
    FULL_TURN,
    TERRAIN_RESOLUTION,
    Normalisation,
    coordinate_names,
    decimal_years,
    elevation_at,
    normalise_conventions,
    open_elevation,
    open_field,
    terrain_elevation,
    wrap_longitude,
)
from aenp.errors import InputError, InputTypeError, MissingFileError
from aenp.files import atomic_write
from aenp.models.io import load, load_config
from aenp.models.neural_process import NeuralProcess

DEFAULT_CHUNK_SIZE = 65_536
"""Target points per forward pass."""
COORDINATE_COLUMNS = ("time", "lat", "lon")
INPUTS = {2: ("lat", "lon"), 3: ("time", "lat", "lon"), 4: ("time", "lat", "lon", "elevation")}
"""The model inputs, in order, by input dimension."""
GRID_DIMS = {dim_x: [d for d in inputs if d != "elevation"] for dim_x, inputs in INPUTS.items()}
"""The dimensions of a grid of those inputs (elevation is a value of each cell)."""
CELL_SIZE_RTOL = 1e-3
"""Relative difference tolerated between the target grid's and the training cells' sizes
(coordinates stored in float32 differ by about 1e-7)."""
EXTRAPOLATION_MARGIN = 0.1
"""How far outside the training region or years (in model units: a tenth of the region's half
side, or of half the training span) a point must lie for :func:`predict` to warn."""
Elevation = xr.DataArray | str | None


class ExtrapolationWarning(UserWarning):
    """Points lie far outside the training region or years (filter it where that is meant)."""


def load_predictor(path: str | os.PathLike) -> tuple[NeuralProcess, Normalisation]:
    """A trained model and the normalisation saved with it, from a run or model directory.

    Raises:
        FileNotFoundError: If there is no saved model.
        ValueError: If the model was saved without a normalisation (not trained on climate
            data): pass one to :func:`predict` instead.
    """
    directory = Path(path)
    if (directory / "model").is_dir():
        directory = directory / "model"
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
    tasks = _context_tasks(context, model.dim_x)
    points, grid = _target_points(targets, model.dim_x)
    if model.dim_x == 4:
        tasks = [_with_elevation(t, elevation, _grid_of(context)) for t in tasks]
        points = _with_elevation(points, elevation, _grid_of(targets))
    _warn_if_extrapolating([*tasks, points], normalisation)
    if grid is None and len(tasks) > 1:
        raise InputError(
            f"the context has {len(tasks)} time steps; for DataFrame targets a 2-D model "
            "needs one: select one, or give grid targets"
        )
    model.eval()
    if hasattr(model.backbone, "forward_grid"):
        if grid is None:
            raise InputError(
                "convolutional models predict on a grid: give the targets as an xarray grid"
            )
        means, stds = _predict_gridded(
            model, tasks, grid, points, normalisation, chunk_size, progress
        )
    else:
        means, stds = _predict_points(model, tasks, points, normalisation, chunk_size, progress)
    if grid is None:
        result = targets.copy()
        result["mean"], result["std"] = means[0], stds[0]
        return result
    return _on_grid(grid, means, stds, tasks, model.dim_x)


def _predict_points(model, tasks, points, normalisation, chunk_size, progress):
    """Point-set models: every task's context points, the targets in chunks."""
    xt = _inputs(points, normalisation, model.dim_x)
    dtype = next(model.parameters()).dtype
    corners = np.stack([xt.min(0), xt.max(0)])
    means, stds = [], []
    bar = tqdm(total=len(tasks) * len(xt), disable=not progress, unit="pt", desc="predict")
    with torch.no_grad():
        for task in tasks:
            xc = torch.as_tensor(_inputs(task, normalisation, model.dim_x), dtype=dtype)[None]
            yc = torch.as_tensor(normalisation.normalise_values(task["value"].to_numpy()))
            yc = yc.to(dtype)[None, :, None]
            mean, std = [], []
            for start in range(0, len(xt), chunk_size):
                chunk = np.concatenate([xt[start : start + chunk_size], corners])
                pred = model(xc, yc, torch.as_tensor(chunk, dtype=dtype)[None])
                mean.append(pred.mean[0, :-2, 0].double().numpy())
                std.append(pred.stddev[0, :-2, 0].double().numpy())
                bar.update(len(chunk) - 2)
            means.append(normalisation.denormalise_values(np.concatenate(mean)))
            stds.append(normalisation.denormalise_std(np.concatenate(std)))
    bar.close()
    return means, stds


def _predict_gridded(model, tasks, grid, points, normalisation, chunk_size, progress):
    """Convolutional models: the context placed on the target grid, every cell predicted.

    The grid's axes are sorted and padded with unobserved cells to the sizes the CNN accepts;
    every context point goes to the nearest cell (cells with several are averaged; points
    more than half a cell outside the grid are left out). A 4-D model gets the target cells'
    elevation (``points``) as its extra input. Tasks go through in chunks of about
    ``chunk_size`` cells.
    """
    names = coordinate_names(grid)
    dims = GRID_DIMS[model.dim_x]
    raw = {d: grid[names[d]].values for d in dims}
    multiple = getattr(model.backbone.cnn, "resolution_multiple", 1)
    axes, orders = [], []
    for d in dims:
        values = _model_coordinate(d, raw[d], normalisation)
        order = np.argsort(values)
        axis = values[order]
        steps = np.diff(axis)
        if len(axis) > 1 and not np.allclose(steps, steps.mean(), rtol=1e-4, atol=0):
            raise InputError(f"convolutional models need an evenly spaced target grid; {d} is not")
        step = steps.mean() if len(axis) > 1 else 1.0
        if len(axis) > 1:
            _check_cell_size(d, step, normalisation)
        padded = -(-len(axis) // multiple) * multiple
        axes.append(axis[0] + step * np.arange(padded))
        orders.append(order)
    shape = tuple(len(a) for a in axes)
    real = tuple(len(o) for o in orders)
    y = np.zeros((len(tasks), *shape))
    counts = np.zeros((len(tasks), *shape))
    num_left_out = 0
    for i, task in enumerate(tasks):
        index, inside = [], np.ones(len(task), dtype=bool)
        for d, axis, n in zip(dims, axes, real, strict=True):
            x = _model_coordinate(d, task[d].to_numpy(), normalisation)
            step = axis[1] - axis[0] if len(axis) > 1 else 1.0
            k = np.rint((x - axis[0]) / step).astype(int)
            inside &= (k >= 0) & (k < n)
            index.append(k)  # only the cells of points inside are used
        if not inside.any():
            raise InputError(f"no context point of task {i} lies on the target grid")
        num_left_out += int((~inside).sum())
        cell = (np.full(inside.sum(), i), *(k[inside] for k in index))
        np.add.at(y, cell, normalisation.normalise_values(task["value"].to_numpy()[inside]))
        np.add.at(counts, cell, 1.0)
    if num_left_out:
        warnings.warn(
            f"{num_left_out} of {sum(map(len, tasks))} context points lie more than half a "
            "cell outside the target grid and are left out; extend the targets to use them",
            stacklevel=3,
        )
    observed = counts > 0
    y = np.where(observed, y / np.maximum(counts, 1), 0.0)
    # Everything goes in as float64: the model casts values to its own dtype and places
    # float64 positions on its lattice exactly.
    target = np.zeros(shape, dtype=bool)
    target[tuple(slice(0, n) for n in real)] = True
    axes_t = tuple(torch.as_tensor(a) for a in axes)
    extra = None
    if model.dim_x == 4:
        # Elevation of every (lat, lon) cell, sorted like the axes; padding copies the edge.
        metres = points["elevation"].to_numpy(dtype=float).reshape(real)[0][np.ix_(*orders[1:])]
        metres = np.pad(
            metres, [(0, len(a) - n) for a, n in zip(axes[1:], real[1:], strict=True)], mode="edge"
        )
        z = torch.as_tensor(normalisation.normalise_input("elevation", metres))
        extra = z[None, ..., None].expand(shape[0], *z.shape, 1)
    per_pass = max(1, chunk_size // int(np.prod(shape)))
    # Crops the padding and restores the targets' own order along every axis.
    unsort = np.ix_(*(np.argsort(o) for o in orders))
    means, stds = [], []
    with torch.no_grad():
        for start in tqdm(range(0, len(tasks), per_pass), disable=not progress, desc="predict"):
            stop = min(start + per_pass, len(tasks))
            batch = GridBatch(
                torch.as_tensor(y[start:stop, ..., None]),
                torch.as_tensor(observed[start:stop]),
                torch.as_tensor(target).expand(stop - start, *shape),
                axes_t,
                extra,
            )
            pred = model(batch)
            for mean, std in zip(pred.mean[..., 0], pred.stddev[..., 0], strict=True):
                means.append(
                    normalisation.denormalise_values(mean.double().numpy()[unsort].ravel())
                )
                stds.append(normalisation.denormalise_std(std.double().numpy()[unsort].ravel()))
    return means, stds


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


def _training_extent(normalisation: Normalisation) -> dict[str, tuple[float, float]]:
    """The training region (degrees) and, if known, years, as ``{dim: (low, high)}``.

    Runs saved before the region was recorded give the box their normalisation maps to
    [-1, 1]², which holds the region.
    """
    norm = normalisation
    side = norm.coord_scale
    extent = {
        "lat": (norm.lat_origin - side, norm.lat_origin + side),
        "lon": (norm.lon_origin - side, norm.lon_origin + side),
    }
    if None not in (norm.south, norm.north, norm.west, norm.east):
        extent = {"lat": (norm.south, norm.north), "lon": (norm.west, norm.east)}
    if norm.time_origin is not None and norm.time_scale is not None:
        extent["time"] = (norm.time_origin - norm.time_scale, norm.time_origin + norm.time_scale)
    return extent


def _distance_outside(dim: str, values: np.ndarray, low: float, high: float) -> float:
    """How far the farthest value lies outside ``[low, high]`` (0 if none does).

    Longitudes go round the globe, the shorter way: ``[170, 200]`` and ``[170, -160]`` are
    both a range across the antimeridian.
    """
    if dim != "lon":
        return float(np.max(np.maximum(low - values, values - high), initial=0.0))
    half = ((high - low) % FULL_TURN) / 2
    offset = np.abs(wrap_longitude(values - (low + half)))
    return float(np.max(offset - half, initial=0.0))


def _warn_if_extrapolating(frames: list[pd.DataFrame], normalisation: Normalisation) -> None:
    """Warns if rows (time, lat, lon) lie far outside the training region or years."""
    scales = {"lat": normalisation.coord_scale, "lon": normalisation.coord_scale}
    scales["time"] = normalisation.time_scale
    names = {"lat": "° beyond the training latitudes", "lon": "° beyond the training longitudes"}
    names["time"] = " years beyond the training years"
    far = []
    for dim, (low, high) in _training_extent(normalisation).items():
        columns = [frame[dim].dropna().to_numpy() for frame in frames]
        columns = [_decimal_years(c) if dim == "time" else c for c in columns if len(c)]
        if not columns:
            continue
        values = np.concatenate(columns).astype(float)
        distance = _distance_outside(dim, values, low, high)
        if distance > EXTRAPOLATION_MARGIN * scales[dim]:
            far.append(f"up to {distance:.3g}{names[dim]} {low:.6g} to {high:.6g}")
    if far:
        warnings.warn(
            "predicting far outside the training data, where the model extrapolates: "
            + "; ".join(far),
            ExtrapolationWarning,
            stacklevel=3,
        )


def _decimal_years(times: np.ndarray) -> np.ndarray:
    """Times (datetime64 or cftime) in years, as :func:`aenp.data.climate.decimal_years`."""
    return decimal_years(xr.DataArray(times, dims="time", coords={"time": times}))


def _model_coordinate(dim: str, values: np.ndarray, normalisation: Normalisation) -> np.ndarray:
    """One input (time, lat, lon or elevation) in model units."""
    if dim == "time":
        values = _decimal_years(values)
    elif dim == "lon":
        values = wrap_longitude(values)
    return normalisation.normalise_input(dim, np.asarray(values, dtype=float))


def _grid_of(data) -> tuple[np.ndarray, np.ndarray] | None:
    """The latitude and longitude axes of a gridded context or targets (None for tables)."""
    if not isinstance(data, xr.DataArray | xr.Dataset):
        return None
    names = coordinate_names(data)
    lat = np.asarray(data[names["lat"]].values, dtype=float)
    return np.sort(lat), np.sort(wrap_longitude(data[names["lon"]].values))


def _with_elevation(
    frame: pd.DataFrame, elevation: Elevation, grid: tuple[np.ndarray, np.ndarray] | None
) -> pd.DataFrame:
    """Rows with an ``elevation`` column (metres): their own, or from ``elevation``."""
    if "elevation" in frame and frame["elevation"].notna().all():
        return frame
    if elevation is None:
        raise InputError(
            "a 4-D model (time, lat, lon, elevation) needs the elevation of every point: "
            "give elevation= (a field in metres or 'terrain') or an elevation column"
        )
    lat, lon = frame["lat"].to_numpy(dtype=float), frame["lon"].to_numpy(dtype=float)
    if isinstance(elevation, str):
        if grid is None:
            # Stations: the terrain map's own 1/12° cells around them.
            step = 1.0 / TERRAIN_RESOLUTION
            grid = tuple(
                (np.floor(v.min() / step) + np.arange(-1, (np.ptp(v) // step) + 3) + 0.5) * step
                for v in (lat, wrap_longitude(lon))
            )
        elevation = terrain_elevation(*grid)
    return frame.assign(elevation=elevation_at(elevation, lat, lon))


def predict_files(
    run_dir: str | os.PathLike,
    context: str | os.PathLike,
    targets: str | os.PathLike,
    out: str | os.PathLike,
    variable: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    elevation: str | os.PathLike | None = None,
) -> Path:
    """:func:`predict` from files to a file (what ``aenp predict`` runs).

    ``context`` and ``targets`` are CSV tables (stations) or netCDF/zarr grids; ``out`` is
    written as netCDF (``.nc``), zarr (``.zarr``) or CSV (``.csv``, for CSV targets) by its
    suffix, with :func:`aenp.files.atomic_write`: an existing file is only replaced by a
    complete one, and an existing folder is never replaced. ``out`` is checked before
    predicting. ``elevation`` (4-D models) is an elevation file (see
    :func:`aenp.data.climate.open_elevation`) or ``"terrain"``.

    Raises:
        InputError: If ``out`` has another suffix, one unlike the targets' kind (a table for
            CSV targets, else a grid), or is an existing folder; for an unreadable file; or as
            :func:`predict`.
        MissingFileError: If an input file, or the folder that should hold ``out``, is missing.
    """
    out = Path(out)
    writers = {".nc": "to_netcdf", ".zarr": "to_zarr", ".csv": "to_csv"}
    if out.suffix not in writers:
        raise InputError(f"--out must end in {', '.join(writers)}, got {out}")
    table = Path(targets).suffix == ".csv"
    if table != (out.suffix == ".csv"):
        kind = "a table (CSV targets): use .csv" if table else "a grid: use .nc or .zarr"
        raise InputError(f"the prediction will be {kind} for --out, got {out}")
    if elevation is not None:
        elevation = "terrain" if str(elevation) == "terrain" else open_elevation(elevation)
    # Entering atomic_write checks out's folder before the prediction, which may take long.
    with atomic_write(out) as tmp:
        result = predict(
            run_dir,
            _read_table_or_grid(context, variable),
            _read_table_or_grid(targets, None, values=False),
            chunk_size=chunk_size,
            elevation=elevation,
        )
        if table:
            result.to_csv(tmp, index=False)
        else:
            getattr(result, writers[out.suffix])(tmp)
    return out


def _read_table_or_grid(
    path: str | os.PathLike, variable: str | None, values: bool = True
) -> pd.DataFrame | xr.DataArray | xr.Dataset:
    """A CSV file as a DataFrame, or a netCDF/zarr grid (its field, or just its coordinates).

    ``values``: the file is the context (a CSV needs a value column), not the targets.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"no file at {path}")
    if path.suffix == ".csv":
        return _read_table(path, values)
    if values:
        return open_field(path, variable)
    opener = xr.open_zarr if path.is_dir() else xr.open_dataset
    try:
        return opener(path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {path} as netCDF or zarr: {error}") from error


def _read_table(path: Path, values: bool) -> pd.DataFrame:
    """A CSV table of stations (``values``) or target points, checked so errors name the file."""
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise InputError(
            f"{path} is empty; expected a CSV table: a header (e.g. lat,lon,value) and one row "
            "per point"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read {path} as a CSV table: {error}") from error
    for column in table.columns:
        if str(column).lower() in ("time", "valid_time"):
            try:
                table[column] = table[column].astype("datetime64[ns]")
            except (ValueError, TypeError) as error:
                raise InputError(
                    f"{path}: column {column!r} must hold dates such as 2020-07-01: {error}"
                ) from error
    _station_frame(table, need_value=values, what=str(path))
    return table


def _coords_frame(da: xr.DataArray) -> pd.DataFrame:
    """Every cell of a standardised field ``[time, lat, lon]`` as rows (values kept)."""
    frame = da.to_dataframe(name="value").reset_index()
    return frame[[*COORDINATE_COLUMNS, "value"]]


def _as_field(data: xr.DataArray | xr.Dataset) -> xr.DataArray:
    """A DataArray from a one-variable Dataset, or the DataArray itself."""
    if isinstance(data, xr.Dataset):
        names = list(data.data_vars)
        if len(names) != 1:
            raise InputError(f"a Dataset must hold one data variable, got {names}")
        data = data[names[0]]
    return data


def _context_tasks(context, dim_x: int) -> list[pd.DataFrame]:
    """Observed context points per task (columns time, lat, lon, value)."""
    if isinstance(context, pd.DataFrame):
        frame = _station_frame(context, need_value=True, what="context")
    elif isinstance(context, xr.DataArray | xr.Dataset):
        field = normalise_conventions(_as_field(context))
        frame = _coords_frame(field)
    else:
        raise InputTypeError(
            f"context must be an xarray DataArray/Dataset or a pandas DataFrame, got "
            f"{type(context).__name__}"
        )
    frame = frame[np.isfinite(frame["value"].to_numpy(dtype=float))]
    if frame.empty:
        raise InputError("the context has no observed (finite) value")
    if dim_x >= 3 or frame["time"].isna().all():
        return [frame]
    return [group for _, group in frame.groupby("time", sort=True)]


def _station_frame(frame: pd.DataFrame, need_value: bool, what: str) -> pd.DataFrame:
    """A DataFrame's lat, lon, time (NaN if absent), elevation (if any) and value columns.

    ``what`` names the table in errors: ``"context"``, ``"targets"`` or a file.
    """
    columns = {str(c).lower(): c for c in frame.columns}
    lat = next((columns[n] for n in ("lat", "latitude") if n in columns), None)
    lon = next((columns[n] for n in ("lon", "longitude") if n in columns), None)
    if lat is None or lon is None:
        raise InputError(f"{what}: a table needs lat and lon columns, got {list(frame.columns)}")
    if frame.empty:
        raise InputError(f"{what}: the table has no rows; expected one row per point")
    time = next((columns[n] for n in ("time", "valid_time") if n in columns), None)
    elevation = columns.get("elevation")
    rows = pd.DataFrame(
        {
            "time": frame[time] if time is not None else np.nan,
            "lat": _numeric(frame, lat, what),
            "lon": _numeric(frame, lon, what),
        }
    )
    if not np.isfinite(rows[["lat", "lon"]].to_numpy()).all():
        raise InputError(
            f"{what}: coordinates must be finite (NaN or infinite latitude or longitude)"
        )
    if elevation is not None:
        rows["elevation"] = _numeric(frame, elevation, what)
    if need_value:
        rest = [c for c in frame.columns if c not in (lat, lon, time, elevation)]
        if "value" in rest:
            rest = ["value"]
        if len(rest) != 1:
            raise InputError(
                f"{what}: a context table needs exactly one value column besides lat, lon, "
                f"time and elevation (or one named 'value'), got {rest}"
            )
        rows["value"] = _numeric(frame, rest[0], what)
    return rows


def _numeric(frame: pd.DataFrame, column, what: str) -> np.ndarray:
    """A column as float64 (empty cells NaN), or an error naming the column and a bad value."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = np.flatnonzero(values.isna() & frame[column].notna())
    if len(bad):
        raise InputError(
            f"{what}: column {column!r} must hold numbers, got {frame[column].iloc[bad[0]]!r} "
            f"in row {bad[0] + 1} of {len(frame)}"
        )
    return values.to_numpy(dtype=float)


def _target_points(targets, dim_x: int) -> tuple[pd.DataFrame, xr.DataArray | None]:
    """Target coordinates as rows, and the target grid (None for DataFrame targets)."""
    if isinstance(targets, pd.DataFrame):
        points = _station_frame(targets, need_value=False, what="targets")
        grid = None
    elif isinstance(targets, xr.DataArray | xr.Dataset):
        grid = targets
        names = coordinate_names(grid)
        if dim_x >= 3 and "time" not in names:
            raise InputError(f"a {dim_x}-D model (time, ...) needs targets with a time coordinate")
        keep = [d for d in COORDINATE_COLUMNS if d in names and (d != "time" or dim_x >= 3)]
        mesh = np.meshgrid(*(grid[names[d]].values for d in keep), indexing="ij")
        points = pd.DataFrame({d: m.ravel() for d, m in zip(keep, mesh, strict=True)})
        points = points.reindex(columns=list(COORDINATE_COLUMNS))
    else:
        raise InputTypeError(
            f"targets must be an xarray DataArray/Dataset or a pandas DataFrame, got "
            f"{type(targets).__name__}"
        )
    if dim_x >= 3 and points["time"].isna().any():
        raise InputError(f"a {dim_x}-D model (time, ...) needs targets with a time coordinate")
    return points, grid


def _inputs(frame: pd.DataFrame, normalisation: Normalisation, dim_x: int) -> np.ndarray:
    """Model inputs ``[n, dx]`` of rows with the columns of :data:`INPUTS`."""
    x = np.stack(
        [_model_coordinate(d, frame[d].to_numpy(), normalisation) for d in INPUTS[dim_x]],
        axis=-1,
    )
    if not np.isfinite(x).all():
        raise InputError(
            "coordinates must be finite (NaN or infinite latitude, longitude, time or elevation)"
        )
    return x


def _on_grid(grid, means, stds, tasks, dim_x: int) -> xr.Dataset:
    """Predictions laid out on the target grid's own coordinates ``[time,] lat, lon``."""
    names = coordinate_names(grid)
    coords = {names[d]: grid[names[d]].values for d in GRID_DIMS[dim_x]}
    shape = tuple(len(v) for v in coords.values())
    if dim_x == 2 and len(tasks) > 1:
        coords = {names.get("time", "time"): [t["time"].iloc[0] for t in tasks], **coords}
        shape = (len(tasks), *shape)
    dims = list(coords)
    data = {
        name: (dims, np.stack(values).reshape(shape))
        for name, values in (("mean", means), ("std", stds))
    }
    return xr.Dataset(data, coords=coords)
