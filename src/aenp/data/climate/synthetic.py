"""A synthetic CF-compliant temperature field of any size, built lazily: a large field, no download.

:func:`synthetic_field` returns a field backed by a dask array whose values are computed only
when read, so a field of tens of GB is built at once; :func:`write_synthetic_field` writes one
to a zarr store chunk by chunk. The values are a deterministic function of the coordinates and
the seed, in kelvin:

* a climatology that is not stationary: colder towards the poles, a seasonal cycle whose
  amplitude grows with latitude, a diurnal cycle in local solar time, and a few waves
  travelling eastwards (amplitudes, wavelengths, periods and phases drawn from the seed);
* Gaussian noise (std :data:`NOISE_STD`) from a counter-based hash (splitmix64) of the global
  (time, lat, lon) indices and the seed, so no value depends on the chunking;
* NaN over an "ocean", the cells where a smooth function of latitude and longitude exceeds a
  threshold (about a third of them), the same at every time step.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from aenp.data.climate.cf import DIMS
from aenp.errors import InputError
from aenp.files import atomic_write

EPOCH = np.datetime64("2000-01-01T00:00")
"""Origin of the seasonal and diurnal cycles (values depend on the time, not on ``start``)."""
DAYS_PER_YEAR = 365.2425
NOISE_STD = 0.5
"""Standard deviation of the noise, in kelvin."""
NUM_WAVES = 3
OCEAN_THRESHOLD = 0.3
"""Cells whose ocean function (values in [-1.5, 1.5]) exceeds this are ocean: about a third."""

_SPLITMIX = tuple(
    np.uint64(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)
)
_CF_COORDINATES = {
    "time": {"standard_name": "time", "long_name": "time", "axis": "T"},
    "lat": {
        "standard_name": "latitude",
        "long_name": "latitude",
        "units": "degrees_north",
        "axis": "Y",
    },
    "lon": {
        "standard_name": "longitude",
        "long_name": "longitude",
        "units": "degrees_east",
        "axis": "X",
    },
}


def synthetic_field(
    num_time: int,
    num_lat: int,
    num_lon: int,
    *,
    start: str = "2000-01-01",
    freq: str = "1h",
    south: float = 35.0,
    north: float = 72.0,
    west: float = -25.0,
    east: float = 45.0,
    chunks: Sequence[int] = (24, 128, 128),
    seed: int = 0,
    name: str = "t2m",
) -> xr.Dataset:
    """A synthetic 2 m temperature field, CF-compliant and lazy (see the module's description).

    Args:
        num_time: Time steps, from ``start`` every ``freq`` (a pandas frequency: "1h", "1D",
            "MS", ...).
        num_lat: Cells from ``south`` to ``north`` (degrees north), values at their centres.
        num_lon: Cells from ``west`` to ``east`` (degrees east), values at their centres.
        start: The first time step.
        freq: The time between steps.
        south: Southern edge of the grid.
        north: Northern edge.
        west: Western edge.
        east: Eastern edge.
        chunks: Chunk sizes ``(time, lat, lon)`` of the dask array (and of a store written
            from it).
        seed: Seeds the waves, the ocean and the noise (not negative).
        name: Name of the variable.

    Returns:
        A Dataset with one float32 variable ``name [time, lat, lon]`` (units K, standard name
        ``air_temperature``), datetime64 ``time`` and CF ``lat`` and ``lon`` coordinates.

    Raises:
        ValueError: If a size or chunk is not positive, the seed negative, the box malformed,
            or ``start`` or ``freq`` is not understood by pandas.
    """
    import dask.array

    sizes = {"num_time": num_time, "num_lat": num_lat, "num_lon": num_lon}
    if min(sizes.values()) < 1 or len(chunks) != 3 or min(chunks) < 1 or seed < 0:
        raise InputError(
            "sizes must be positive, chunks three positive sizes (time, lat, lon) and the seed "
            f"not negative; got {sizes}, chunks={tuple(chunks)} and seed={seed}"
        )
    if not (-90 <= south < north <= 90 and -180 <= west < east <= 180):
        raise InputError(
            "the box must satisfy -90 <= south < north <= 90 and -180 <= west < east <= 180; "
            f"got south={south}, north={north}, west={west}, east={east}"
        )
    try:
        step = pd.to_timedelta(freq)
        times = pd.date_range(start, periods=num_time, freq=step)
    except (TypeError, ValueError) as error:
        raise InputError(
            f"start={start!r} and freq={freq!r}: {error}; freq must be a fixed step such as "
            "'1h', '6h' or '1D'"
        ) from error
    grid = _Grid(
        first_day=(times[0].to_datetime64() - EPOCH) / np.timedelta64(1, "D"),
        step_days=step / pd.Timedelta(days=1),
        lat=(south, north, num_lat),
        lon=(west, east, num_lon),
    )
    shape = (num_time, num_lat, num_lon)
    # Every block computes its values from its own place in the field: the graph holds no
    # data, so a field of any size is built at once and any part of it is read quickly.
    values = dask.array.map_blocks(
        partial(_block, grid=grid, params=_parameters(seed)),
        chunks=dask.array.core.normalize_chunks(tuple(chunks), shape),
        dtype=np.float32,
        meta=np.empty((0, 0, 0), dtype=np.float32),
    )
    arguments = {
        **sizes,
        **{"start": start, "freq": freq, "south": south, "north": north, "west": west},
        **{"east": east, "chunks": list(chunks), "seed": seed, "name": name},
    }
    variable_attrs = {
        "standard_name": "air_temperature",
        "long_name": "synthetic 2 m air temperature",
        "units": "K",
    }
    return xr.Dataset(
        {name: (DIMS, values, variable_attrs)},
        coords={
            "time": ("time", times.values, _CF_COORDINATES["time"]),
            "lat": ("lat", _centres(grid.lat, 0, num_lat), _CF_COORDINATES["lat"]),
            "lon": ("lon", _centres(grid.lon, 0, num_lon), _CF_COORDINATES["lon"]),
        },
        attrs={
            "Conventions": "CF-1.8",
            "title": "Synthetic 2 m air temperature",
            "source": "aenp.data.climate.synthetic_field" + json.dumps(arguments),
        },
    )


def write_synthetic_field(
    path: str | Path, *sizes: int, progress: bool = True, **options: Any
) -> Path:
    """Writes :func:`synthetic_field` to a zarr store, chunk by chunk, atomically.

    Memory stays bounded by a few chunks however large the field; the store's chunks are
    ``chunks``. Nothing is left at ``path`` unless the whole store is written.

    Args:
        path: The store to create (e.g. ``era5_like.zarr``); its folder must exist.
        sizes: ``num_time, num_lat, num_lon``, as for :func:`synthetic_field`.
        progress: Show a progress bar over the chunks.
        options: Keyword arguments of :func:`synthetic_field`.

    Returns:
        ``path``.

    Raises:
        ValueError: As :func:`synthetic_field`, or if ``path`` is an existing folder (folders
            are never replaced).
    """
    from tqdm.dask import TqdmCallback

    dataset = synthetic_field(*sizes, **options)
    with atomic_write(path) as tmp, warnings.catch_warnings():
        # Zarr 3 notes that consolidated metadata is not yet in its specification; xarray
        # writes and reads it to open a store in one request.
        warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
        with TqdmCallback(desc=f"writing {Path(path).name}", disable=not progress):
            dataset.to_zarr(tmp, mode="w-")
    return Path(path)


def _parameters(seed: int) -> dict[str, np.ndarray | np.uint64]:
    """What the seed decides: the waves, the ocean's phases and the noise's hash key.

    Per wave: amplitude (K), wavelengths in latitude and longitude (°), period (days), phase.
    """
    rng = np.random.default_rng(seed)
    return {
        "amplitude": rng.uniform(1.0, 3.0, NUM_WAVES),
        "lat_wavelength": rng.uniform(15.0, 40.0, NUM_WAVES) * rng.choice([-1, 1], NUM_WAVES),
        "lon_wavelength": rng.uniform(15.0, 40.0, NUM_WAVES),
        "period": rng.uniform(2.0, 8.0, NUM_WAVES),
        "phase": rng.uniform(0.0, 2 * np.pi, NUM_WAVES),
        "ocean_phase": rng.uniform(0.0, 2 * np.pi, 3),
        "key": _splitmix64(np.uint64(seed)),
    }


@dataclass(frozen=True)
class _Grid:
    """Where a field's cells are: each block finds its coordinates from its global indices.

    Attributes:
        first_day: Days from :data:`EPOCH` to the first time step.
        step_days: Days between steps.
        lat: ``(south, north, cells)``.
        lon: ``(west, east, cells)``.
    """

    first_day: float
    step_days: float
    lat: tuple[float, float, int]
    lon: tuple[float, float, int]


def _centres(axis: tuple[float, float, int], first: int, stop: int) -> np.ndarray:
    """Centres of cells ``first`` to ``stop - 1`` of an axis ``(low, high, cells)``."""
    low, high, cells = axis
    return low + (np.arange(first, stop) + 0.5) * (high - low) / cells


def _block(grid: _Grid, params: dict, block_info: dict) -> np.ndarray:
    """Values ``[time, lat, lon]`` of the block at ``block_info``'s place in the field."""
    (t0, t1), (i0, i1), (j0, j1) = block_info[None]["array-location"]
    step, row, col = np.arange(t0, t1), np.arange(i0, i1), np.arange(j0, j1)
    d = (grid.first_day + step * grid.step_days)[:, None, None]
    phi = _centres(grid.lat, i0, i1)[None, :, None]
    lam = _centres(grid.lon, j0, j1)[None, None, :]
    turn = 2 * np.pi
    value = 288.0 - 0.45 * (phi - 45.0)
    value = value - (6.0 + 0.15 * (phi - 35.0)) * np.cos(turn * (d - 15.0) / DAYS_PER_YEAR)
    # Warmest at 15:00 local solar time.
    value = value + 3.0 * np.cos(turn * (d + lam / 360.0 - 0.625))
    for k in range(NUM_WAVES):
        wave = lam / params["lon_wavelength"][k] + phi / params["lat_wavelength"][k]
        wave = turn * (wave - d / params["period"][k]) + params["phase"][k]
        value = value + params["amplitude"][k] * np.cos(wave)
    # The noise of a cell is a hash of its global index: the same in any block.
    num_lat, num_lon = grid.lat[2], grid.lon[2]
    counter = (step[:, None, None] * num_lat + row[None, :, None]) * num_lon + col[None, None, :]
    value = value + NOISE_STD * _gaussian(counter.astype(np.uint64) ^ params["key"])
    p = params["ocean_phase"]
    ocean = np.sin(turn * lam / 37.0 + p[0]) * np.cos(turn * phi / 23.0 + p[1])
    ocean = ocean + 0.5 * np.sin(turn * (lam + phi) / 53.0 + p[2])
    return np.where(ocean > OCEAN_THRESHOLD, np.nan, value).astype(np.float32)


def _splitmix64(x: np.ndarray | np.uint64) -> np.ndarray | np.uint64:
    """The splitmix64 finaliser: a bijective hash of 64-bit integers (arithmetic wraps)."""
    increment, first, second = _SPLITMIX
    with np.errstate(over="ignore"):
        x = x + increment
        x = (x ^ (x >> np.uint64(30))) * first
        x = (x ^ (x >> np.uint64(27))) * second
    return x ^ (x >> np.uint64(31))


def _gaussian(counter: np.ndarray) -> np.ndarray:
    """A standard normal value per 64-bit counter (Box-Muller on its hash's two halves)."""
    bits = _splitmix64(counter)
    high = ((bits >> np.uint64(32)).astype(np.float64) + 0.5) / 2.0**32
    low = ((bits & np.uint64(0xFFFFFFFF)).astype(np.float64) + 0.5) / 2.0**32
    return np.sqrt(-2.0 * np.log(high)) * np.cos(2 * np.pi * low)
