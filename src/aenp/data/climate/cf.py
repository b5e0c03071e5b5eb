"""CF conventions: finding latitude, longitude and time, and bringing a field into one layout.

Every field comes out as a DataArray with dims exactly ``("time", "lat", "lon")``: float64
``lat`` ascending (south to north), float64 ``lon`` in [-180, 180) ascending, and ``time`` kept
as cftime objects so 360-day and other calendars work. Latitude and longitude are found by name
(``lat``, ``latitude``, ``lon``, ``longitude``, any case), else by their CF attributes
(``standard_name``, ``units``, ``long_name`` or ``_CoordinateAxisType``, read by cf-xarray);
time by name (``time``, or ERA5's ``valid_time``).
"""

from __future__ import annotations

import cf_xarray  # noqa: F401 (registers the .cf accessor)
import numpy as np
import xarray as xr
from cf_xarray.criteria import coordinate_criteria

from aenp.data.climate.longitude import wrap_longitude
from aenp.errors import InputError

DIMS = ("time", "lat", "lon")
"""Dimension order of every field returned by :func:`normalise_conventions`."""
LAT_NAMES = ("lat", "latitude")
LON_NAMES = ("lon", "longitude")
LAT_UNITS = coordinate_criteria["latitude"]["units"]
"""The units that mark a latitude (CF's, as cf-xarray knows them)."""
LON_UNITS = coordinate_criteria["longitude"]["units"]
"""The units that mark a longitude (CF's, as cf-xarray knows them)."""
TIME_NAMES = ("time", "valid_time")
EXPVER_DIM = "expver"
ENSEMBLE_DIM = "number"
REGRID_HINT = (
    "regrid it to a regular latitude-longitude grid first, e.g. with xESMF "
    "(xesmf.Regridder(ds, target, 'bilinear')) or CDO (cdo remapbil,r360x180 in.nc out.nc)"
)
"""What to do with a curvilinear grid (2-D latitude and longitude), which aenp cannot read."""

_AXES = {
    "lat": ("latitude", LAT_NAMES, "degrees_north"),
    "lon": ("longitude", LON_NAMES, "degrees_east"),
}
"""Per horizontal axis: its CF standard name, the names it goes by, and its usual units."""


def _axis_variables(obj: xr.Dataset | xr.DataArray, axis: str) -> list[str]:
    """Coordinates that may hold ``axis`` (lat or lon): by name first, then by CF attributes."""
    standard, names, _ = _AXES[axis]
    by_name = [str(name) for name in obj.coords if str(name).lower() in names]
    return list(dict.fromkeys([*by_name, *obj.cf.coordinates.get(standard, [])]))


def coordinate_names(obj: xr.Dataset | xr.DataArray) -> dict[str, str]:
    """The object's own names of its latitude, longitude and (if any) time coordinates.

    Returns:
        ``{"lat": ..., "lon": ...}`` plus ``"time"`` when the object has a time coordinate.

    Raises:
        ValueError: If latitude or longitude is missing, or is 2-D (a curvilinear grid).
    """
    names = {}
    for axis, (standard, candidates, units) in _AXES.items():
        found = [name for name in _axis_variables(obj, axis) if obj[name].ndim == 1]
        if not found:
            _refuse_curvilinear(obj, axis)
            raise InputError(
                f"no {standard} coordinate (named {candidates} or with units {units}) "
                f"among coordinates {list(map(str, obj.coords))} and dims {list(obj.dims)}"
            )
        names[axis] = found[0]
    time = [n for n in TIME_NAMES if n in obj.coords]
    if time:
        names["time"] = time[0]
    return names


def _refuse_curvilinear(obj: xr.Dataset | xr.DataArray, axis: str) -> None:
    """Refuses a latitude or longitude of two or more dimensions: a curvilinear grid.

    Regional climate models and rotated-pole grids store ``lat(y, x)`` and ``lon(y, x)``, as
    coordinates or as data variables.
    """
    if isinstance(obj, xr.Dataset):
        obj = obj.set_coords(list(obj.data_vars))
    for name in _axis_variables(obj, axis):
        variable = obj[name]
        if variable.ndim >= 2:
            raise InputError(
                f"the grid is curvilinear: {_AXES[axis][0]} {name!r} is {variable.ndim}-D with "
                f"dims {tuple(map(str, variable.dims))}, and aenp reads only regular latitude-"
                f"longitude grids (1-D latitude and longitude); {REGRID_HINT}"
            )


def standard_names(obj: xr.Dataset | xr.DataArray) -> xr.Dataset | xr.DataArray:
    """Renames the latitude, longitude and time coordinates (and dims) to lat, lon, time."""
    for target, name in coordinate_names(obj).items():
        if target != "time" and obj[name].dims[0] != name:
            obj = obj.swap_dims({obj[name].dims[0]: name})
        obj = obj.rename({name: target}) if name != target else obj
    return obj


def normalise_conventions(da: xr.DataArray) -> xr.DataArray:
    """Brings a gridded field into standard conventions; attributes are kept.

    Latitude, longitude and time are found by name or CF attributes and renamed. ERA5's
    ``expver`` is merged (each time step is under one version); a size-1 ensemble dimension,
    other size-1 dimensions and coordinates other than time, lat and lon are dropped; a time
    dimension of length 1 is added when missing. A lazy (dask-backed) field stays lazy:
    nothing here reads its values.

    Args:
        da: A field with latitude and longitude dimensions, in any order and convention.

    Returns:
        The field ``[time, lat, lon]`` with float64 ``lat`` ascending and float64 ``lon`` in
        [-180, 180) ascending.

    Raises:
        ValueError: If a coordinate is missing or 2-D (a curvilinear grid), the values are not
            numbers, the field has several ensemble members or another dimension longer than 1,
            or wrapped longitudes coincide.
    """
    if not (np.issubdtype(da.dtype, np.floating) or np.issubdtype(da.dtype, np.integer)):
        raise InputError(
            f"field {da.name!r} holds values of dtype {da.dtype}; expected real numbers "
            "(integer or floating point)"
        )
    da = standard_names(da)
    if da.sizes.get(ENSEMBLE_DIM, 1) > 1:
        raise InputError(
            f"field {da.name!r} has {da.sizes[ENSEMBLE_DIM]} ensemble members "
            f"({ENSEMBLE_DIM!r}); select one first, e.g. da.isel({ENSEMBLE_DIM}=0)"
        )
    if EXPVER_DIM in da.dims:
        # ERA5 files mixing final and preliminary (ERA5T) data hold each time step under exactly
        # one experiment version and NaN under the others.
        da = da.max(EXPVER_DIM, skipna=True, keep_attrs=True)
    if "time" not in da.dims:
        da = da.expand_dims("time")
    da = da.drop_vars([c for c in da.coords if c not in DIMS])
    da = da.squeeze([d for d in da.dims if d not in DIMS and da.sizes[d] == 1])
    extra = {d: n for d, n in da.sizes.items() if d not in DIMS}
    if extra:
        raise InputError(
            f"field {da.name!r} has dimensions {extra} besides {DIMS}; select one value of each"
        )
    lat = da["lat"].values.astype(np.float64)
    lon = wrap_longitude(da["lon"].values)
    if len(np.unique(lon)) != len(lon):
        raise InputError(f"field {da.name!r}: longitudes coincide after wrapping to [-180, 180)")
    da = da.assign_coords(
        lat=("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
        lon=("lon", lon, {"units": "degrees_east", "standard_name": "longitude"}),
    )
    return _ascending(_ascending(da.transpose(*DIMS), "lat"), "lon")


def _ascending(da: xr.DataArray, dim: str) -> xr.DataArray:
    """``da`` ordered by its coordinate ``dim``, ascending, by slices where the stored order allows.

    Slices (an axis stored descending, such as latitude north to south, is reversed; a 0-360
    longitude axis is cut at 180° into two) keep a lazy field's chunks aligned with its store,
    which an indexed selection would cut anew. Any other order is one indexed selection.
    """
    if (np.diff(da[dim].values) < 0).sum() > da.sizes[dim] // 2:
        da = da.isel({dim: slice(None, None, -1)})
    order = np.argsort(da[dim].values, kind="stable")
    runs = np.split(order, np.flatnonzero(np.diff(order) != 1) + 1)
    if len(runs) == 1:
        return da
    if len(runs) > 2:
        return da.isel({dim: order})
    return xr.concat([da.isel({dim: slice(run[0], run[-1] + 1)}) for run in runs], dim=dim)


def observed_mask(da: xr.DataArray) -> xr.DataArray:
    """Where the field has a finite value: a boolean DataArray of the field's shape."""
    return np.isfinite(da)


def decimal_years(times: xr.DataArray | np.ndarray) -> np.ndarray:
    """Time of each step in years (year plus the elapsed fraction of it), ``[time]``.

    Args:
        times: A field with a time coordinate, or times (datetime64 or cftime) ``[time]``.
    """
    if not isinstance(times, xr.DataArray):
        times = xr.DataArray(times, dims="time", coords={"time": times})
    time = times["time"].dt
    seconds = time.hour * 3600 + time.minute * 60 + time.second
    day = time.dayofyear - 1 + seconds / 86400
    return (time.year + day / time.days_in_year).values.astype(np.float64)


def field_years(da: xr.DataArray) -> np.ndarray:
    """The year of each time step, ``[time]``."""
    return da["time"].dt.year.values


def describe_extent(da: xr.DataArray) -> str:
    """The field's lat, lon and year ranges, for messages."""
    lat, lon = da["lat"].values, da["lon"].values
    years = field_years(da) if "time" in da.coords else None
    span = "" if years is None else f", years {years.min()}-{years.max()}"
    return f"lat [{lat.min()}, {lat.max()}], lon [{lon.min()}, {lon.max()}]{span}"
