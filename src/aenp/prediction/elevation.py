"""The surface elevation of every point, the fourth input of 4-D models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from aenp.data.climate import TERRAIN_RESOLUTION, elevation_at, terrain_elevation, wrap_longitude
from aenp.errors import InputError

Elevation = xr.DataArray | str | None
"""A field in metres ``[lat, lon]``, ``"terrain"`` (the built-in terrain map), or None."""


def with_elevation(
    frame: pd.DataFrame, elevation: Elevation, grid: tuple[np.ndarray, np.ndarray] | None
) -> pd.DataFrame:
    """Rows with an ``elevation`` column (metres): their own, or from ``elevation``.

    Args:
        frame: Rows with lat and lon columns, and maybe their own elevation.
        elevation: Where the rows without one take theirs from.
        grid: The sorted latitude and longitude axes of the rows' grid, over whose cells the
            terrain map is averaged; None for stations.
    """
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
