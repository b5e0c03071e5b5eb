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
grid itself: the context is placed on its nearest cells, and tasks go through in chunks.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr
from tqdm.auto import tqdm

from aenp.data.batch import GridBatch
from aenp.data.climate import (
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
from aenp.models.io import load, load_config
from aenp.models.neural_process import NeuralProcess

DEFAULT_CHUNK_SIZE = 65_536
"""Target points per forward pass."""
COORDINATE_COLUMNS = ("time", "lat", "lon")
INPUTS = {2: ("lat", "lon"), 3: ("time", "lat", "lon"), 4: ("time", "lat", "lon", "elevation")}
"""The model inputs, in order, by input dimension."""
GRID_DIMS = {dim_x: [d for d in inputs if d != "elevation"] for dim_x, inputs in INPUTS.items()}
"""The dimensions of a grid of those inputs (elevation is a value of each cell)."""
Elevation = xr.DataArray | str | None


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
        ValueError: For a missing normalisation, coordinate or value column, an empty context,
            non-finite coordinates, targets lacking the time a 3-D or 4-D model needs, or
            points without elevation for a 4-D model.
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
        padded = -(-len(axis) // multiple) * multiple
        axes.append(axis[0] + step * np.arange(padded))
        orders.append(order)
    shape = tuple(len(a) for a in axes)
    real = tuple(len(o) for o in orders)
    y = np.zeros((len(tasks), *shape))
    counts = np.zeros((len(tasks), *shape))
    for i, task in enumerate(tasks):
        index, inside = [], np.ones(len(task), dtype=bool)
        for d, axis, n in zip(dims, axes, real, strict=True):
            x = _model_coordinate(d, task[d].to_numpy(), normalisation)
            step = axis[1] - axis[0] if len(axis) > 1 else 1.0
            k = np.rint((x - axis[0]) / step).astype(int)
            inside &= (k >= 0) & (k < n)
            index.append(np.clip(k, 0, n - 1))
        if not inside.any():
            raise InputError(f"no context point of task {i} lies on the target grid")
        cell = (np.full(inside.sum(), i), *(k[inside] for k in index))
        np.add.at(y, cell, normalisation.normalise_values(task["value"].to_numpy()[inside]))
        np.add.at(counts, cell, 1.0)
    observed = counts > 0
    y = np.where(observed, y / np.maximum(counts, 1), 0.0)
    dtype = next(model.parameters()).dtype
    target = np.zeros(shape, dtype=bool)
    target[tuple(slice(0, n) for n in real)] = True
    axes_t = tuple(torch.as_tensor(a, dtype=dtype) for a in axes)
    extra = None
    if model.dim_x == 4:
        # Elevation of every (lat, lon) cell, sorted like the axes; padding copies the edge.
        metres = points["elevation"].to_numpy().reshape(real)[0][np.ix_(*orders[1:])]
        metres = np.pad(
            metres, [(0, len(a) - n) for a, n in zip(axes[1:], real[1:], strict=True)], mode="edge"
        )
        z = torch.as_tensor(normalisation.normalise_input("elevation", metres), dtype=dtype)
        extra = z[None, ..., None].expand(shape[0], *z.shape, 1)
    per_pass = max(1, chunk_size // int(np.prod(shape)))
    # Crops the padding and restores the targets' own order along every axis.
    unsort = np.ix_(*(np.argsort(o) for o in orders))
    means, stds = [], []
    with torch.no_grad():
        for start in tqdm(range(0, len(tasks), per_pass), disable=not progress, desc="predict"):
            stop = min(start + per_pass, len(tasks))
            batch = GridBatch(
                torch.as_tensor(y[start:stop, ..., None], dtype=dtype),
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


def _model_coordinate(dim: str, values: np.ndarray, normalisation: Normalisation) -> np.ndarray:
    """One input (time, lat, lon or elevation) in model units."""
    if dim == "time":
        values = decimal_years(xr.DataArray(values, dims="time", coords={"time": values}))
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
    written as netCDF (``.nc``), zarr (``.zarr``) or CSV (``.csv``) by its suffix, first to a
    temporary name, so an existing file is only replaced by a complete one. ``elevation`` (4-D
    models) is an elevation file (see :func:`aenp.data.climate.open_elevation`) or
    ``"terrain"``.

    Raises:
        ValueError: If ``out`` has another suffix, or as :func:`predict`.
    """
    out = Path(out)
    writers = {".nc": "to_netcdf", ".zarr": "to_zarr", ".csv": "to_csv"}
    if out.suffix not in writers:
        raise InputError(f"--out must end in {', '.join(writers)}, got {out}")
    if elevation is not None:
        elevation = "terrain" if str(elevation) == "terrain" else open_elevation(elevation)
    result = predict(
        run_dir,
        _read_table_or_grid(context, variable),
        _read_table_or_grid(targets, None, values=False),
        chunk_size=chunk_size,
        elevation=elevation,
    )
    if isinstance(result, pd.DataFrame) != (out.suffix == ".csv"):
        kind = "a table (CSV targets)" if isinstance(result, pd.DataFrame) else "a grid"
        raise InputError(f"the prediction is {kind}; choose an --out suffix for it, got {out}")
    tmp = out.with_name(f".{out.name}.partial")
    if isinstance(result, pd.DataFrame):
        result.to_csv(tmp, index=False)
    else:
        getattr(result, writers[out.suffix])(tmp)
    if out.is_dir():
        shutil.rmtree(out)
    tmp.replace(out)
    return out


def _read_table_or_grid(
    path: str | os.PathLike, variable: str | None, values: bool = True
) -> pd.DataFrame | xr.DataArray | xr.Dataset:
    """A CSV file as a DataFrame, or a netCDF/zarr grid (its field, or just its coordinates)."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"no file at {path}")
    if path.suffix == ".csv":
        table = pd.read_csv(path)
        times = [c for c in table.columns if str(c).lower() in ("time", "valid_time")]
        return table.astype({c: "datetime64[ns]" for c in times})
    if values:
        return open_field(path, variable)
    opener = xr.open_zarr if path.is_dir() else xr.open_dataset
    try:
        return opener(path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {path} as netCDF or zarr: {error}") from error


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
        frame = _station_frame(context, need_value=True)
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


def _station_frame(frame: pd.DataFrame, need_value: bool) -> pd.DataFrame:
    """A DataFrame's lat, lon, time (NaN if absent), elevation (if any) and value columns."""
    columns = {str(c).lower(): c for c in frame.columns}
    lat = next((columns[n] for n in ("lat", "latitude") if n in columns), None)
    lon = next((columns[n] for n in ("lon", "longitude") if n in columns), None)
    if lat is None or lon is None:
        raise InputError(f"a DataFrame needs lat and lon columns, got {list(frame.columns)}")
    time = next((columns[n] for n in ("time", "valid_time") if n in columns), None)
    elevation = columns.get("elevation")
    rows = pd.DataFrame(
        {
            "time": frame[time] if time is not None else np.nan,
            "lat": frame[lat].to_numpy(dtype=float),
            "lon": frame[lon].to_numpy(dtype=float),
        }
    )
    if not np.isfinite(rows[["lat", "lon"]].to_numpy()).all():
        raise InputError("coordinates must be finite (NaN or infinite latitude or longitude)")
    if elevation is not None:
        rows["elevation"] = frame[elevation].to_numpy(dtype=float)
    if need_value:
        rest = [c for c in frame.columns if c not in (lat, lon, time, elevation)]
        if "value" in rest:
            rest = ["value"]
        if len(rest) != 1:
            raise InputError(
                f"a context DataFrame needs exactly one value column besides lat, lon, time "
                f"and elevation (or one named 'value'), got {rest}"
            )
        rows["value"] = frame[rest[0]].to_numpy(dtype=float)
    return rows


def _target_points(targets, dim_x: int) -> tuple[pd.DataFrame, xr.DataArray | None]:
    """Target coordinates as rows, and the target grid (None for DataFrame targets)."""
    if isinstance(targets, pd.DataFrame):
        points = _station_frame(targets, need_value=False)
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
