"""Opening gridded fields and surface elevation from netCDF files and zarr stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from aenp.data.climate.cf import normalise_conventions, standard_names
from aenp.errors import InputError, MissingFileError

ZARR_MARKERS = (".zarray", ".zgroup", ".zmetadata", "zarr.json")
"""Files that mark a directory as a zarr store."""
ELEVATION_VARIABLES = ("ASurf", "geopotential_at_surface", "orog", "surface_altitude", "z")
"""Surface elevation fields: never picked as the data variable unless named."""
GEOPOTENTIAL_UNITS = ("m**2 s**-2", "m2 s-2", "m^2 s^-2", "m2/s2", "m^2/s^2")
"""Units of a surface geopotential (ERA5 ``z``), which is divided by :data:`GRAVITY`."""
GRAVITY = 9.80665
"""Standard gravity (m s⁻²), turning a geopotential into a height."""


def open_dataset(path: str | Path) -> xr.Dataset:
    """A netCDF file or zarr store as it is stored, times decoded as cftime objects.

    Raises:
        FileNotFoundError: If nothing exists at ``path``.
        ValueError: If it cannot be read as netCDF or zarr.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"no climate data file or zarr store at {path}")
    decode_times = xr.coders.CFDatetimeCoder(use_cftime=True)
    is_zarr = path.is_dir() and (
        path.suffix == ".zarr" or any((path / m).exists() for m in ZARR_MARKERS)
    )
    try:
        if is_zarr:
            return xr.open_zarr(path, decode_times=decode_times)
        return xr.open_dataset(path, decode_times=decode_times)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {path} as netCDF or zarr: {error}") from error


def _open_standardised(path: str | Path) -> xr.Dataset:
    """:func:`open_dataset` with its coordinates renamed to lat, lon (and time).

    Raises:
        ValueError: As :func:`open_dataset`, or if it lacks a latitude or longitude coordinate.
    """
    dataset = open_dataset(path)
    try:
        return standard_names(dataset)
    except ValueError as error:
        raise InputError(f"{path}: {error}") from None


def _pick_variable(
    path: str | Path, names: list[str], variable: str | None, candidates: list[str], refusal: str
) -> str:
    """``variable`` if it is among the file's ``names``; without one, the only candidate.

    Raises:
        ValueError: If the named variable is missing, or there is not exactly one candidate
            (the message is ``refusal``, after the path).
    """
    if variable is not None:
        if variable not in names:
            raise InputError(f"{path} has no variable {variable!r}; available: {names}")
        return variable
    if len(candidates) != 1:
        raise InputError(f"{path}: {refusal}")
    return candidates[0]


def _normalise_from(path: str | Path, da: xr.DataArray) -> xr.DataArray:
    """:func:`normalise_conventions` of a file's variable, naming the file in its errors."""
    try:
        return normalise_conventions(da)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None


def open_field(path: str | Path, variable: str | None = None) -> xr.DataArray:
    """Opens one variable of a netCDF file or zarr store in standard conventions.

    Args:
        path: A netCDF file, or a zarr store (a directory ending in ``.zarr`` or holding zarr
            metadata).
        variable: The data variable; None picks the only one with latitude and longitude
            dimensions that is not a surface elevation (:data:`ELEVATION_VARIABLES`).

    Returns:
        The field ``[time, lat, lon]``, see :func:`normalise_conventions`.

    Raises:
        FileNotFoundError: If nothing exists at ``path``.
        ValueError: If the file cannot be read, the variable is missing or ambiguous, or the
            field lacks a latitude or longitude coordinate.
    """
    dataset = _open_standardised(path)
    names = [str(name) for name in dataset.data_vars]
    gridded = [
        name
        for name in names
        if {"lat", "lon"} <= set(dataset[name].dims) and name not in ELEVATION_VARIABLES
    ]
    refusal = (
        f"cannot choose the data variable among {gridded or names}; pass variable= to name one"
    )
    variable = _pick_variable(path, names, variable, gridded, refusal)
    return _normalise_from(path, dataset[variable])


def elevation_variables(path: str | Path) -> list[str]:
    """The surface elevation variables (:data:`ELEVATION_VARIABLES`) a file holds."""
    names = _open_standardised(path).data_vars
    return [name for name in ELEVATION_VARIABLES if name in names]


def open_elevation(path: str | Path, variable: str | None = None) -> xr.DataArray:
    """Opens a surface elevation field, in metres, from a netCDF file or zarr store.

    Args:
        path: A file holding one of :data:`ELEVATION_VARIABLES` (WFDE5 ``ASurf``, ERA5 or
            WeatherBench2 surface geopotential, CMIP ``orog``, ...).
        variable: Its name; None picks the only elevation variable of the file.

    Returns:
        Elevation ``[lat, lon]`` in metres (a geopotential is divided by :data:`GRAVITY`), in
        the conventions of :func:`normalise_conventions`; of a field with several time steps,
        the first.

    Raises:
        FileNotFoundError: If nothing exists at ``path``.
        ValueError: If the file cannot be read or has no (or several) elevation variables.
    """
    dataset = _open_standardised(path)
    names = [str(name) for name in dataset.data_vars]
    found = [name for name in names if name in ELEVATION_VARIABLES]
    refusal = (
        f"found {found or 'no'} elevation variable(s) among {names} (known: "
        f"{', '.join(ELEVATION_VARIABLES)}); pass the name of one"
    )
    variable = _pick_variable(path, names, variable, found, refusal)
    field = _normalise_from(path, dataset[variable]).isel(time=0, drop=True)
    units = field.attrs.get("units")
    if units in GEOPOTENTIAL_UNITS or (
        units is None and variable in ("geopotential_at_surface", "z")
    ):
        field = field / GRAVITY
    return field.astype(np.float64).rename("elevation").assign_attrs(units="m")
