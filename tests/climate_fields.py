"""Synthetic annual climate fields for the tests: one value a year, on a 360-day calendar."""

import cftime
import xarray as xr


def annual_times(years) -> list[cftime.Datetime360Day]:
    """1 July of each year, as HadCM3's annual means are stamped."""
    return [cftime.Datetime360Day(int(y), 7, 1) for y in years]


def annual_field(values, years, lat, lon, name: str = "t2m") -> xr.DataArray:
    """``values [time, lat, lon]`` as a CF-style field."""
    return xr.DataArray(
        values,
        dims=("time", "lat", "lon"),
        coords={"time": annual_times(years), "lat": lat, "lon": lon},
        name=name,
    )
