"""Context and targets from xarray or pandas: tasks and target points as rows of coordinates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from aenp.data.climate import (
    LAT_NAMES,
    LON_NAMES,
    TIME_NAMES,
    coordinate_names,
    normalise_conventions,
    wrap_longitude,
)
from aenp.errors import InputError, InputTypeError

COORDINATE_COLUMNS = ("time", "lat", "lon")
INPUTS = {2: ("lat", "lon"), 3: ("time", "lat", "lon"), 4: ("time", "lat", "lon", "elevation")}
"""The model inputs, in order, by input dimension."""
GRID_DIMS = {dim_x: [d for d in inputs if d != "elevation"] for dim_x, inputs in INPUTS.items()}
"""The dimensions of a grid of those inputs (elevation is a value of each cell)."""


def context_tasks(context, dim_x: int) -> list[pd.DataFrame]:
    """Observed context points per task (columns time, lat, lon, value)."""
    if isinstance(context, pd.DataFrame):
        frame = station_frame(context, need_value=True, what="context")
    elif isinstance(context, xr.DataArray | xr.Dataset):
        field = normalise_conventions(as_field(context))
        frame = _coords_frame(field)
    else:
        raise context_type_error(context)
    frame = frame[np.isfinite(frame["value"].to_numpy(dtype=float))]
    if frame.empty:
        raise InputError("the context has no observed (finite) value")
    if dim_x >= 3 or frame["time"].isna().all():
        return [frame]
    return [group for _, group in frame.groupby("time", sort=True)]


def context_type_error(context) -> InputTypeError:
    """The error for a context that is neither xarray nor pandas."""
    return InputTypeError(
        f"context must be an xarray DataArray/Dataset or a pandas DataFrame, got "
        f"{type(context).__name__}"
    )


def target_points(targets, dim_x: int) -> tuple[pd.DataFrame, xr.DataArray | None]:
    """Target coordinates as rows, and the target grid (None for DataFrame targets)."""
    if isinstance(targets, pd.DataFrame):
        points = station_frame(targets, need_value=False, what="targets")
        grid = None
    elif isinstance(targets, xr.DataArray | xr.Dataset):
        grid = checked_grid(targets, dim_x)
        points = grid_points(grid, dim_x)
    else:
        raise InputTypeError(
            f"targets must be an xarray DataArray/Dataset or a pandas DataFrame, got "
            f"{type(targets).__name__}"
        )
    if dim_x >= 3 and points["time"].isna().any():
        raise InputError(f"a {dim_x}-D model (time, ...) needs targets with a time coordinate")
    return points, grid


def checked_grid(grid: xr.DataArray | xr.Dataset, dim_x: int) -> xr.DataArray | xr.Dataset:
    """The target grid, if it has the coordinates a model of ``dim_x`` inputs needs.

    Raises:
        InputError: If latitude or longitude is missing, or time (or a time) for a 3-D or 4-D
            model.
    """
    names = coordinate_names(grid)
    if dim_x >= 3 and ("time" not in names or pd.isna(grid[names["time"]].values).any()):
        raise InputError(f"a {dim_x}-D model (time, ...) needs targets with a time coordinate")
    return grid


def grid_points(
    grid: xr.DataArray | xr.Dataset, dim_x: int, cells: tuple[slice, ...] | None = None
) -> pd.DataFrame:
    """The target grid's cells as rows (columns time, lat, lon), in its own order.

    ``cells`` picks a range of indices along each of the grid's dimensions
    (:data:`GRID_DIMS`); None takes them all.
    """
    names = coordinate_names(grid)
    axes = [grid[names[d]].values for d in GRID_DIMS[dim_x]]
    if cells is not None:
        axes = [axis[c] for axis, c in zip(axes, cells, strict=True)]
    mesh = np.meshgrid(*axes, indexing="ij")
    points = pd.DataFrame({d: m.ravel() for d, m in zip(GRID_DIMS[dim_x], mesh, strict=True)})
    return points.reindex(columns=list(COORDINATE_COLUMNS))


def grid_axes(data) -> tuple[np.ndarray, np.ndarray] | None:
    """The sorted latitude and longitude axes of a gridded context or targets (None for tables)."""
    if not isinstance(data, xr.DataArray | xr.Dataset):
        return None
    names = coordinate_names(data)
    lat = np.asarray(data[names["lat"]].values, dtype=float)
    return np.sort(lat), np.sort(wrap_longitude(data[names["lon"]].values))


def station_frame(frame: pd.DataFrame, need_value: bool, what: str) -> pd.DataFrame:
    """A DataFrame's lat, lon, time (NaN if absent), elevation (if any) and value columns.

    ``what`` names the table in errors: ``"context"``, ``"targets"`` or a file.
    """
    columns = {str(c).lower(): c for c in frame.columns}
    lat, lon, time = (
        next((columns[n] for n in names if n in columns), None)
        for names in (LAT_NAMES, LON_NAMES, TIME_NAMES)
    )
    if lat is None or lon is None:
        raise InputError(f"{what}: a table needs lat and lon columns, got {list(frame.columns)}")
    if frame.empty:
        raise InputError(f"{what}: the table has no rows; expected one row per point")
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


def as_field(data: xr.DataArray | xr.Dataset) -> xr.DataArray:
    """A DataArray from a one-variable Dataset, or the DataArray itself."""
    if isinstance(data, xr.Dataset):
        names = list(data.data_vars)
        if len(names) != 1:
            raise InputError(f"a Dataset must hold one data variable, got {names}")
        data = data[names[0]]
    return data


def _coords_frame(da: xr.DataArray) -> pd.DataFrame:
    """Every cell of a standardised field ``[time, lat, lon]`` as rows (values kept)."""
    frame = da.to_dataframe(name="value").reset_index()
    return frame[[*COORDINATE_COLUMNS, "value"]]
