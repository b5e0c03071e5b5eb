"""Opening gridded fields and surface elevation from netCDF files, zarr stores or xarray objects.

Files are opened lazily: their variables are dask arrays cut into the file's own chunks, read
only when used, so a field larger than memory can be opened, selected and normalised.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from aenp.data.climate.cf import normalise_conventions, standard_names
from aenp.errors import InputError, InputTypeError, MissingFileError

ZARR_MARKERS = (".zarray", ".zgroup", ".zmetadata", "zarr.json")
"""Files that mark a directory as a zarr store."""
ELEVATION_VARIABLES = ("ASurf", "geopotential_at_surface", "orog", "surface_altitude", "z")
"""Surface elevation fields: never picked as the data variable unless named."""
GEOPOTENTIAL_UNITS = ("m**2 s**-2", "m2 s-2", "m^2 s^-2", "m2/s2", "m^2/s^2")
"""Units of a surface geopotential (ERA5 ``z``), which is divided by :data:`GRAVITY`."""
GRAVITY = 9.80665
"""Standard gravity (m s⁻²), turning a geopotential into a height."""

FieldSource = str | os.PathLike | xr.Dataset | xr.DataArray
"""Where a field comes from: a netCDF file or zarr store, or a Dataset or DataArray already
opened (e.g. ARCO-ERA5 opened from the cloud, or :func:`aenp.data.climate.synthetic_field`)."""


def open_dataset(path: str | Path) -> xr.Dataset:
    """A netCDF file or zarr store as it is stored, lazily, times decoded as cftime objects.

    Variables are dask arrays in the file's own chunks (a netCDF variable stored contiguously
    is one chunk).

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
            return xr.open_zarr(path, decode_times=decode_times, chunks={})
        return xr.open_dataset(path, decode_times=decode_times, chunks={})
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {path} as netCDF or zarr: {error}") from error


def describe_source(source: FieldSource) -> str:
    """A field's source, for messages: its path, or the kind of xarray object."""
    if isinstance(source, xr.DataArray):
        return f"the DataArray {source.name!r}"
    if isinstance(source, xr.Dataset):
        return "the Dataset given"
    return str(source)


def _open_standardised(source: FieldSource) -> xr.Dataset:
    """A source as a Dataset, its coordinates renamed to lat, lon (and time).

    A file is opened with :func:`open_dataset`.

    Raises:
        TypeError: If ``source`` is neither a path nor a Dataset or DataArray.
        ValueError: As :func:`open_dataset`, or if it lacks a latitude or longitude coordinate.
    """
    if isinstance(source, xr.DataArray):
        dataset = source.to_dataset(name="field" if source.name is None else source.name)
    elif isinstance(source, xr.Dataset):
        dataset = source
    elif isinstance(source, str | os.PathLike):
        dataset = open_dataset(source)
    else:
        raise InputTypeError(
            "a climate field must be a path to a netCDF file or zarr store, or an xarray "
            f"Dataset or DataArray; got {type(source).__name__}"
        )
    try:
        return standard_names(dataset)
    except ValueError as error:
        raise InputError(f"{describe_source(source)}: {error}") from None


def _pick_variable(
    source: str, names: list[str], variable: str | None, candidates: list[str], refusal: str
) -> str:
    """``variable`` if it is among the source's ``names``; without one, the only candidate.

    Raises:
        ValueError: If the named variable is missing, or there is not exactly one candidate
            (the message is ``refusal``, after the source).
    """
    if variable is not None:
        if variable not in names:
            raise InputError(f"{source} has no variable {variable!r}; available: {names}")
        return variable
    if len(candidates) != 1:
        raise InputError(f"{source}: {refusal}")
    return candidates[0]


def _normalise_from(source: str, da: xr.DataArray) -> xr.DataArray:
    """:func:`normalise_conventions` of a source's variable, naming the source in its errors."""
    try:
        return normalise_conventions(da)
    except InputError as error:
        raise InputError(f"{source}: {error}") from None


def open_field(path: FieldSource, variable: str | None = None) -> xr.DataArray:
    """Opens one variable of a netCDF file, zarr store or xarray object in standard conventions.

    A file is opened lazily (see :func:`open_dataset`), and the field stays as lazy as its
    source: its values are read when used.

    Args:
        path: A netCDF file, a zarr store (a directory ending in ``.zarr`` or holding zarr
            metadata), or a Dataset or DataArray already opened.
        variable: The data variable; None picks the only one with latitude and longitude
            dimensions that is not a surface elevation (:data:`ELEVATION_VARIABLES`).

    Returns:
        The field ``[time, lat, lon]``, see :func:`normalise_conventions`.

    Raises:
        FileNotFoundError: If nothing exists at ``path``.
        TypeError: If ``path`` is neither a path nor a Dataset or DataArray.
        ValueError: If the file cannot be read, the variable is missing or ambiguous, or the
            field lacks a latitude or longitude coordinate.
    """
    source = describe_source(path)
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
    variable = _pick_variable(source, names, variable, gridded, refusal)
    return _normalise_from(source, dataset[variable])


def elevation_variables(path: FieldSource) -> list[str]:
    """The surface elevation variables (:data:`ELEVATION_VARIABLES`) a source holds."""
    names = _open_standardised(path).data_vars
    return [name for name in ELEVATION_VARIABLES if name in names]


def open_elevation(path: FieldSource, variable: str | None = None) -> xr.DataArray:
    """Opens a surface elevation field, in metres, from a netCDF file, zarr store or Dataset.

    Args:
        path: A source holding one of :data:`ELEVATION_VARIABLES` (WFDE5 ``ASurf``, ERA5 or
            WeatherBench2 surface geopotential, CMIP ``orog``, ...).
        variable: Its name; None picks the only elevation variable of the file.

    Returns:
        Elevation ``[lat, lon]`` in metres (a geopotential is divided by :data:`GRAVITY`), in
        the conventions of :func:`normalise_conventions`; of a field with several time steps,
        the first; in memory.

    Raises:
        FileNotFoundError: If nothing exists at ``path``.
        ValueError: If the file cannot be read or has no (or several) elevation variables.
    """
    source = describe_source(path)
    dataset = _open_standardised(path)
    names = [str(name) for name in dataset.data_vars]
    found = [name for name in names if name in ELEVATION_VARIABLES]
    refusal = (
        f"found {found or 'no'} elevation variable(s) among {names} (known: "
        f"{', '.join(ELEVATION_VARIABLES)}); pass the name of one"
    )
    variable = _pick_variable(source, names, variable, found, refusal)
    field = _normalise_from(source, dataset[variable]).isel(time=0, drop=True)
    units = field.attrs.get("units")
    if units in GEOPOTENTIAL_UNITS or (
        units is None and variable in ("geopotential_at_surface", "z")
    ):
        field = field / GRAVITY
    # Elevation is one map, small beside the field: held in memory, as interpolation wants.
    return field.astype(np.float64).rename("elevation").assign_attrs(units="m").load()
