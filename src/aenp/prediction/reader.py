"""The context read a few time steps and a region at a time, so that no field is loaded whole.

A gridded field (an xarray DataArray or one-variable Dataset, lazy or in memory) is read only
where a block of the prediction needs it; station observations (a DataFrame) are held in
memory. Either is a sequence of *steps*: a field's time steps in time order, or the tasks of
:func:`~aenp.prediction.inputs.context_tasks` for stations. :func:`context_reader` makes one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from aenp.data.climate import normalise_conventions, terrain_elevation
from aenp.data.climate.chunks import as_slice
from aenp.prediction.elevation import Elevation, with_elevation
from aenp.prediction.inputs import (
    COORDINATE_COLUMNS,
    as_field,
    context_tasks,
    context_type_error,
    grid_axes,
)

Keep = Callable[[str, np.ndarray], np.ndarray]
"""Which coordinates ``[n]`` of a dimension (time, lat or lon) to read: a mask ``[n]``."""

READ_CELLS = 4_000_000
"""Cells of a field read at once when the whole field is read (about 32 MB in float64)."""


@dataclass(frozen=True)
class ContextSummary:
    """What one pass over the whole context finds.

    Attributes:
        digest: SHA-256 of every value and coordinate, which changes with any of them.
        points: Observed points per step ``[steps]``.
        kept: Of those, the points whose coordinates ``keep`` keeps ``[steps]``.
        coords: Per dimension (time, lat, lon), the distinct coordinates of observed points.
    """

    digest: str
    points: np.ndarray
    kept: np.ndarray
    coords: dict[str, np.ndarray]


class FieldContext:
    """A gridded field ``[time, lat, lon]`` (NaN = unobserved), read where asked.

    Args:
        field: The field, in any of the conventions of
            :func:`~aenp.data.climate.normalise_conventions`.
        elevation: For a 4-D model, where points take their elevation from; else None.
    """

    def __init__(self, field: xr.DataArray, elevation: Elevation):
        self._field = normalise_conventions(field)
        times = self._field["time"].values
        self._order = np.argsort(times, kind="stable")
        self.times = times[self._order]
        """Each step's time ``[steps]``, ascending."""
        self._metres = None if elevation is None else self._cell_elevation(field, elevation)
        """The elevation of every cell ``[lat, lon]`` (4-D models)."""

    def _cell_elevation(self, field: xr.DataArray, elevation: Elevation) -> np.ndarray:
        """The elevation ``[lat, lon]`` that :func:`aenp.predict` gives each cell's point."""
        if isinstance(elevation, str):
            # The terrain averaged over the field's own cells.
            elevation = terrain_elevation(*grid_axes(field))
        lat, lon = np.meshgrid(self._field["lat"].values, self._field["lon"].values, indexing="ij")
        cells = pd.DataFrame({"lat": lat.ravel(), "lon": lon.ravel()})
        return with_elevation(cells, elevation, None)["elevation"].to_numpy().reshape(lat.shape)

    def read(self, steps: np.ndarray, keep: Keep | None = None) -> pd.DataFrame:
        """The observed points of ``steps`` that ``keep`` keeps, in (step, lat, lon) order.

        Columns step, time, lat, lon, value (and elevation for a 4-D model).
        """
        steps = np.asarray(steps)
        lat, lon = self._field["lat"].values, self._field["lon"].values
        lat_index, lon_index = np.arange(len(lat)), np.arange(len(lon))
        if keep is not None:
            steps = steps[keep("time", self.times[steps])]
            lat_index, lon_index = lat_index[keep("lat", lat)], lon_index[keep("lon", lon)]
        index = {"time": self._order[steps], "lat": lat_index, "lon": lon_index}
        values = self._field.isel({d: as_slice(i) for d, i in index.items()}).values
        observed = np.isfinite(values)
        t, i, j = np.nonzero(observed)
        i, j = lat_index[i], lon_index[j]
        columns = {"step": steps[t], "time": self.times[steps][t], "lat": lat[i], "lon": lon[j]}
        columns["value"] = values[observed]
        if self._metres is not None:
            columns["elevation"] = self._metres[i, j]
        return pd.DataFrame(columns)

    def summarise(self, keep: Keep, progress: bool) -> ContextSummary:
        """Reads the whole field once, :data:`READ_CELLS` cells at a time."""
        lat, lon = self._field["lat"].values, self._field["lon"].values
        digest = hashlib.sha256(_coordinates_hash(self.times, lat, lon))
        points = np.zeros(len(self.times), dtype=int)
        kept = np.zeros_like(points)
        observed_lat, observed_lon = np.zeros(len(lat), bool), np.zeros(len(lon), bool)
        keep_lat, keep_lon = keep("lat", lat), keep("lon", lon)
        keep_time = keep("time", self.times)
        for steps in tqdm(self._groups(), disable=not progress, desc="read context"):
            values = self._field.isel(time=as_slice(self._order[steps])).values
            digest.update(np.ascontiguousarray(values).tobytes())
            observed = np.isfinite(values)
            points[steps] = observed.sum(axis=(1, 2))
            kept[steps] = observed[:, keep_lat][:, :, keep_lon].sum(axis=(1, 2))
            kept[steps] *= keep_time[steps]
            observed_lat |= observed.any(axis=(0, 2))
            observed_lon |= observed.any(axis=(0, 1))
        coords = {
            "time": self.times[points > 0],
            "lat": lat[observed_lat],
            "lon": lon[observed_lon],
        }
        return ContextSummary(digest.hexdigest(), points, kept, coords)

    def _groups(self) -> list[np.ndarray]:
        """The steps in consecutive groups of about :data:`READ_CELLS` cells."""
        cells = self._field.sizes["lat"] * self._field.sizes["lon"]
        steps = np.arange(len(self.times))
        return np.array_split(steps, -(-len(steps) * cells // READ_CELLS))


class StationContext:
    """Station observations (a DataFrame), held in memory as the tasks of ``context_tasks``.

    Args:
        table: The observations: lat, lon, maybe time and elevation, and one value column.
        dim_x: The model's inputs.
        elevation: For a 4-D model, where points without an elevation column take theirs from.
    """

    def __init__(self, table: pd.DataFrame, dim_x: int, elevation: Elevation):
        self._tasks = context_tasks(table, dim_x)
        if dim_x == 4:
            self._tasks = [with_elevation(t, elevation, None) for t in self._tasks]
        self._tasks = [t.assign(step=i) for i, t in enumerate(self._tasks)]
        self.times = np.array([t["time"].iloc[0] for t in self._tasks])
        """Each step's time ``[steps]`` (the time of its first point)."""

    def read(self, steps: np.ndarray, keep: Keep | None = None) -> pd.DataFrame:
        """The points of ``steps`` that ``keep`` keeps (columns step, time, lat, lon, value)."""
        frame = pd.concat([self._tasks[s] for s in steps])
        return frame if keep is None else frame[_kept(frame, keep)]

    def summarise(self, keep: Keep, progress: bool) -> ContextSummary:
        """Counts the points in memory; the digest covers every column."""
        frame = pd.concat(self._tasks)
        rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
        digest = hashlib.sha256(rows.tobytes()).hexdigest()
        points = np.array([len(t) for t in self._tasks])
        kept = np.array([_kept(t, keep).sum() for t in self._tasks])
        coords = {d: pd.unique(frame[d].dropna()) for d in COORDINATE_COLUMNS}
        return ContextSummary(digest, points, kept, coords)


def context_reader(
    context: xr.DataArray | xr.Dataset | pd.DataFrame, dim_x: int, elevation: Elevation
) -> FieldContext | StationContext:
    """A reader of gridded or station context.

    Raises:
        InputTypeError: If ``context`` is neither xarray nor pandas.
        InputError: As :func:`~aenp.prediction.inputs.context_tasks` for a bad table or
            Dataset.
    """
    if isinstance(context, pd.DataFrame):
        return StationContext(context, dim_x, elevation)
    if isinstance(context, xr.DataArray | xr.Dataset):
        return FieldContext(as_field(context), elevation if dim_x == 4 else None)
    raise context_type_error(context)


def _kept(frame: pd.DataFrame, keep: Keep) -> np.ndarray:
    """Which rows ``[n]`` have time, lat and lon that ``keep`` keeps."""
    mask = np.ones(len(frame), dtype=bool)
    for d in COORDINATE_COLUMNS:
        mask &= keep(d, frame[d].to_numpy())
    return mask


def _coordinates_hash(*axes: np.ndarray) -> bytes:
    """Bytes that change with any coordinate of ``axes`` (numbers, datetimes or cftime)."""
    return b"".join(pd.util.hash_array(np.asarray(a)).tobytes() for a in axes)
