"""Surface elevation, the fourth input of 4-D tasks: a terrain map, and values at points.

Elevation comes from a file (:func:`aenp.data.climate.open_elevation`) or, offline, from the
global 1/12° terrain map that pvlib ships (:func:`terrain_elevation`), and is interpolated to
any point with :func:`elevation_at`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import xarray as xr

from aenp.data.climate.cf import describe_extent
from aenp.data.climate.longitude import FULL_TURN, on_branch, unwrap_longitude
from aenp.errors import InputError

TERRAIN_RESOLUTION = 12
"""Cells per degree of the global terrain map behind :func:`terrain_elevation`."""


def terrain_elevation(lat: np.ndarray, lon: np.ndarray) -> xr.DataArray:
    """Mean surface elevation over the cells of a grid, from a global 1/12° terrain map.

    The map ships with pvlib (``pvlib/data/Altitude.h5``: Mapzen terrain tiles aggregated from
    SRTM, GMTED2010, ETOPO1 and national models, in 28 m steps); ocean counts as 0 m. Each
    cell's bounds lie halfway to its neighbours' centres.

    Args:
        lat: Cell centres, ascending, in degrees north.
        lon: Cell centres in degrees east, ascending in [-180, 180) or along their arc (a grid
            across the antimeridian as 150..180, -180..-110 or as 150..250).

    Returns:
        Elevation ``[lat, lon]`` in metres.

    Raises:
        ImportError: If pvlib (``pip install "aenp[climate]"``) is not installed.
        ValueError: If a cell holds no centre of the terrain map (a grid finer than 1/12°).
    """
    codes = _terrain_codes()
    # Rows run from 90°N southwards, columns from 180°W eastwards; 255 marks the ocean. The
    # columns go round twice, so cells on an arc past 180° find theirs.
    fine_lat = 90.0 - (np.arange(codes.shape[0]) + 0.5) / TERRAIN_RESOLUTION
    fine_lon = -180.0 + (np.arange(2 * codes.shape[1]) + 0.5) / TERRAIN_RESOLUTION
    arc = unwrap_longitude(lon)
    order = np.argsort(arc, kind="stable")
    rows, lat_cells = _cells(fine_lat, np.asarray(lat, dtype=np.float64))
    cols, lon_cells = _cells(fine_lon, arc[order])
    lon_cells = order[lon_cells]
    block = codes[np.ix_(rows, cols % codes.shape[1])]
    block = np.where(block == 255, 0.0, block.astype(np.float64) * 28.0 - 450.0)
    sums = np.zeros((len(lat), len(lon)))
    np.add.at(sums, (lat_cells[:, None], lon_cells[None, :]), block)
    counts = np.bincount(lat_cells, minlength=len(lat))[:, None] * np.bincount(
        lon_cells, minlength=len(lon)
    )
    if not counts.all():
        raise InputError(
            f"the grid is finer than the terrain map (1/{TERRAIN_RESOLUTION}°): some cells "
            "hold none of its points; give an elevation file instead"
        )
    return xr.DataArray(
        sums / counts,
        coords={"lat": np.asarray(lat, dtype=np.float64), "lon": np.asarray(lon, dtype=np.float64)},
        dims=("lat", "lon"),
        name="elevation",
        attrs={"units": "m", "source": "pvlib Altitude.h5 (Mapzen terrain tiles), cell means"},
    )


@functools.cache
def _terrain_codes() -> np.ndarray:
    """The terrain map of pvlib, ``[2160, 4320]`` uint8 codes of 28 m steps from -450 m."""
    try:
        import h5py
        import pvlib
    except ImportError as error:
        raise ImportError(
            'the built-in terrain map needs pvlib and h5py: pip install "aenp[climate]"'
        ) from error
    with h5py.File(Path(pvlib.__file__).parent / "data" / "Altitude.h5", "r") as file:
        return file["Altitude"][:]


def _cells(fine: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the fine points inside a 1-D grid of cells, and the cell of each."""
    if len(centres) > 1:
        edges = (centres[1:] + centres[:-1]) / 2
        first, last = 1.5 * centres[0] - 0.5 * centres[1], 1.5 * centres[-1] - 0.5 * centres[-2]
    else:
        edges, first, last = np.array([]), centres[0] - 0.5, centres[0] + 0.5
    inside = np.flatnonzero((fine >= first) & (fine < last))
    return inside, np.searchsorted(edges, fine[inside], side="right")


def elevation_at(
    elevation: xr.DataArray, lat: np.ndarray, lon: np.ndarray, allow_missing: bool = False
) -> np.ndarray:
    """Elevation (metres) at points, interpolated bilinearly from a field ``[lat, lon]``.

    Points beyond the outermost cell centres (by at most half a cell) take the nearest cell.

    Args:
        elevation: From :func:`open_elevation` or :func:`terrain_elevation`.
        lat: Latitudes of the points, any shape.
        lon: Longitudes, the same shape, any convention (each taken within 180° of the
            field's centre, so a field past 180° from :func:`select_region` works too).
        allow_missing: Return NaN, instead of raising, where there is no elevation.

    Raises:
        ValueError: If a point lies outside the field or at a missing (NaN) cell.
    """
    lat = np.asarray(lat, dtype=np.float64)
    axis = elevation["lon"].values
    centre = (axis.min() + axis.max()) / 2
    lon = on_branch(np.asarray(lon, dtype=np.float64), centre - FULL_TURN / 2)
    points = {
        "lat": xr.DataArray(lat.ravel(), dims="points"),
        "lon": xr.DataArray(lon.ravel(), dims="points"),
    }
    values = elevation.interp(points, method="linear").values
    missing = ~np.isfinite(values)
    if missing.any():
        values[missing] = elevation.sel(
            {d: p[missing] for d, p in points.items()}, method="nearest"
        ).values
        for d, p in points.items():
            axis = elevation[d].values
            half = np.abs(np.diff(axis)).max() / 2 if len(axis) > 1 else 0.5
            far = (p.values < axis.min() - half) | (p.values > axis.max() + half)
            values[far] = np.nan
    if not allow_missing and not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise InputError(
            f"{bad} point(s) lie outside the elevation field ({describe_extent(elevation)}) or on "
            "missing cells"
        )
    return values.reshape(lat.shape)
