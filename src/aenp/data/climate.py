"""Real gridded temperature: CF-style fields, elevation, regions, year splits, normalisation.

Any CF-style gridded field (netCDF or zarr) is opened as a DataArray with dims exactly
``("time", "lat", "lon")``: float64 ``lat`` ascending (south to north), float64 ``lon`` in
[-180, 180) ascending, and ``time`` kept as cftime objects so 360-day and other calendars work.
The names of ERA5 (old and new Copernicus CDS files), WFDE5, WeatherBench2/ARCO-ERA5 and the
iris sample data are recognised, as are coordinates marked by their CF ``standard_name`` or
``units``. Missing values (e.g. ocean in land-only products) stay NaN; :func:`observed_mask`
marks the finite ones. A region whose west edge lies east of its east edge crosses the
antimeridian (e.g. 150°E to 110°W); its selection continues past 180° (to 250°), so longitudes
increase without a jump, and model coordinates treat longitude as periodic.

Surface elevation, the fourth input of 4-D tasks, comes from a file (:func:`open_elevation`:
WFDE5 ``ASurf``, ERA5 or WeatherBench2 surface geopotential, ``orog``) or, offline, from the
global 1/12° terrain map that pvlib ships (:func:`terrain_elevation`), and is interpolated to
any point with :func:`elevation_at`.

The default data, available offline, is the HadCM3 annual-mean 1.5 m air temperature over North
America shipped by ``iris-sample-data`` (:data:`DEFAULT_DATASET`): 240 years (1860-2099) of a
360-day calendar on a 37 x 49 grid of 1.25° (lat) x 1.875° (lon) cells, 15-60°N, 135-45°W. The
default split (:data:`DEFAULT_SPLITS`) trains on the western half (``na_west``) in 1860-2059,
tests in distribution on the western half in 2060-2099, and tests out of distribution on the
eastern half (``na_east``) in 2060-2099 — the analogue of the paper's Europe to central US.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TypeVar

import numpy as np
import xarray as xr

from aenp.errors import InputError, MissingFileError

DIMS = ("time", "lat", "lon")
"""Dimension order of every field returned by :func:`normalise_conventions`."""
LAT_NAMES = ("lat", "latitude")
LON_NAMES = ("lon", "longitude")
LAT_UNITS = ("degrees_north", "degree_north", "degrees_N", "degree_N", "degreesN", "degreeN")
LON_UNITS = ("degrees_east", "degree_east", "degrees_E", "degree_E", "degreesE", "degreeE")
TIME_NAMES = ("time", "valid_time")
EXPVER_DIM = "expver"
ENSEMBLE_DIM = "number"
ELEVATION_VARIABLES = ("ASurf", "geopotential_at_surface", "orog", "surface_altitude", "z")
"""Surface elevation fields: never picked as the data variable unless named."""
GEOPOTENTIAL_UNITS = ("m**2 s**-2", "m2 s-2", "m^2 s^-2", "m2/s2", "m^2/s^2")
"""Units of a surface geopotential (ERA5 ``z``), which is divided by :data:`GRAVITY`."""
CELL_TOLERANCE = 1e-6
"""Degrees within which two cell centres are the same cell (far below any grid spacing)."""
GRAVITY = 9.80665
"""Standard gravity (m s⁻²), turning a geopotential into a height."""
TERRAIN_RESOLUTION = 12
"""Cells per degree of the global terrain map behind :func:`terrain_elevation`."""
ZARR_MARKERS = (".zarray", ".zgroup", ".zmetadata", "zarr.json")
FULL_TURN = 360.0
"""Degrees of longitude around the globe."""
REGRID_HINT = (
    "regrid it to a regular latitude-longitude grid first, e.g. with xESMF "
    "(xesmf.Regridder(ds, target, 'bilinear')) or CDO (cdo remapbil,r360x180 in.nc out.nc)"
)
"""What to do with a curvilinear grid (2-D latitude and longitude), which aenp cannot read."""

ArrayT = TypeVar("ArrayT")


@dataclass(frozen=True)
class Region:
    """A latitude-longitude box; cells whose centres lie inside (inclusive) belong to it.

    A box with ``west > east`` crosses the antimeridian: ``lon=(150, -110)`` runs eastwards
    from 150°E over 180° to 110°W.

    Attributes:
        name: Name used in messages.
        lat: ``(south, north)`` in degrees north, ``-90 <= south < north <= 90``.
        lon: ``(west, east)`` in degrees east, both in [-180, 180] and ``west != east``.
    """

    name: str
    lat: tuple[float, float]
    lon: tuple[float, float]

    def __post_init__(self) -> None:
        (south, north), (west, east) = self.lat, self.lon
        if not -90 <= south < north <= 90:
            raise InputError(
                f"region {self.name!r}: lat must be (south, north) with -90 <= south < north "
                f"<= 90, got {self.lat}"
            )
        if not (-180 <= west <= 180 and -180 <= east <= 180 and self.lon_span()[1] > west):
            raise InputError(
                f"region {self.name!r}: lon must be (west, east) with -180 <= west, east <= 180 "
                "and west != east (west > east for a box crossing the antimeridian, e.g. "
                f"(150, -110)), got {self.lon}"
            )

    @property
    def crosses_antimeridian(self) -> bool:
        """Whether the box runs eastwards over 180°."""
        return self.lon[0] > self.lon[1]

    def lon_span(self, start: float | None = None) -> tuple[float, float]:
        """``(west, east)`` on a continuous axis, ``west < east``.

        ``east`` lies past 180° for a box crossing the antimeridian; given ``start``, both are
        moved by whole turns so that ``west`` lies in ``[start, start + 360)``.
        """
        west, east = self.lon
        if west > east:
            east = east + FULL_TURN
        if start is None:
            return west, east
        turns = FULL_TURN * ((west - start) // FULL_TURN)
        return west - turns, east - turns


REGIONS = {
    "europe": Region("europe", (35.0, 70.0), (-15.0, 40.0)),
    "central_us": Region("central_us", (30.0, 50.0), (-110.0, -85.0)),
    "na_west": Region("na_west", (15.0, 60.0), (-135.0, -90.0)),
    "na_east": Region("na_east", (15.0, 60.0), (-89.0, -45.0)),
}
"""Named regions; ``na_west`` and ``na_east`` split the default grid's columns (-90 is west)."""


@dataclass(frozen=True)
class Split:
    """A region and an inclusive range of years.

    Attributes:
        region: A name in :data:`REGIONS`.
        years: ``(first, last)`` year, or None for all.
    """

    region: str
    years: tuple[int, int] | None


DEFAULT_SPLITS = {
    "train": Split("na_west", (1860, 2059)),
    "test_id": Split("na_west", (2060, 2099)),
    "test_ood": Split("na_east", (2060, 2099)),
}
"""Default split of :data:`DEFAULT_DATASET`: west for training, held-out years and the east."""

DEFAULT_DATASET = {
    "name": "HadCM3 annual-mean 1.5 m air temperature over North America",
    "package": "iris-sample-data",
    "variable": "air_temperature",
    "units": "K",
    "years": (1860, 2099),
    "calendar": "360_day",
    "files": {"E1": "E1_north_america.nc", "A1B": "A1B_north_america.nc"},
}
"""The offline default data: one file per emission scenario."""


def default_data_path(scenario: str = "E1") -> Path:
    """Path of the default data file of an emission scenario (``"E1"`` or ``"A1B"``).

    Raises:
        ValueError: If the scenario is unknown.
        ImportError: If ``iris-sample-data`` is not installed.
    """
    files = DEFAULT_DATASET["files"]
    if scenario not in files:
        raise InputError(f"scenario must be one of {', '.join(files)}, got {scenario!r}")
    try:
        import iris_sample_data
    except ImportError as error:
        raise ImportError(
            'the default climate data needs iris-sample-data: pip install "aenp[climate]"'
        ) from error
    return Path(iris_sample_data.path) / files[scenario]


def _open_dataset(path: str | Path) -> xr.Dataset:
    """A netCDF file or zarr store, its coordinates renamed to lat, lon (and time).

    Raises:
        FileNotFoundError: If nothing exists at ``path``.
        ValueError: If it cannot be read or lacks a latitude or longitude coordinate.
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
            dataset = xr.open_zarr(path, decode_times=decode_times)
        else:
            dataset = xr.open_dataset(path, decode_times=decode_times)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {path} as netCDF or zarr: {error}") from error
    try:
        dataset = _standard_names(dataset)
    except ValueError as error:
        raise InputError(f"{path}: {error}") from None
    return dataset


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
    dataset = _open_dataset(path)
    names = [str(name) for name in dataset.data_vars]
    if variable is None:
        candidates = [
            name
            for name in names
            if {"lat", "lon"} <= set(dataset[name].dims) and name not in ELEVATION_VARIABLES
        ]
        if len(candidates) != 1:
            raise InputError(
                f"{path}: cannot choose the data variable among {candidates or names}; "
                "pass variable= to name one"
            )
        variable = candidates[0]
    elif variable not in names:
        raise InputError(f"{path} has no variable {variable!r}; available: {names}")
    return _normalise_from(path, dataset[variable])


def _normalise_from(path: str | Path, da: xr.DataArray) -> xr.DataArray:
    """:func:`normalise_conventions` of a file's variable, naming the file in its errors."""
    try:
        return normalise_conventions(da)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None


def elevation_variables(path: str | Path) -> list[str]:
    """The surface elevation variables (:data:`ELEVATION_VARIABLES`) a file holds."""
    names = _open_dataset(path).data_vars
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
    dataset = _open_dataset(path)
    names = [str(name) for name in dataset.data_vars]
    if variable is None:
        found = [name for name in names if name in ELEVATION_VARIABLES]
        if len(found) != 1:
            raise InputError(
                f"{path}: found {found or 'no'} elevation variable(s) among {names} (known: "
                f"{', '.join(ELEVATION_VARIABLES)}); pass the name of one"
            )
        variable = found[0]
    elif variable not in names:
        raise InputError(f"{path} has no variable {variable!r}; available: {names}")
    field = _normalise_from(path, dataset[variable]).isel(time=0, drop=True)
    units = field.attrs.get("units")
    if units in GEOPOTENTIAL_UNITS or (
        units is None and variable in ("geopotential_at_surface", "z")
    ):
        field = field / GRAVITY
    return field.astype(np.float64).rename("elevation").assign_attrs(units="m")


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
    lon = _on_branch(np.asarray(lon, dtype=np.float64), centre - FULL_TURN / 2)
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
            f"{bad} point(s) lie outside the elevation field ({_extent(elevation)}) or on "
            "missing cells"
        )
    return values.reshape(lat.shape)


def _find_coord(
    obj: xr.Dataset | xr.DataArray, names: tuple[str, ...], units: tuple[str, ...], standard: str
) -> str | None:
    """Name of the 1-D coordinate matching a name, else a standard name or units; or None."""
    coords = {str(k): c for k, c in obj.coords.items() if c.ndim == 1}
    by_name = [name for name in coords if name.lower() in names]
    by_attrs = [
        name
        for name, coord in coords.items()
        if coord.attrs.get("standard_name") == standard or coord.attrs.get("units") in units
    ]
    return (by_name + by_attrs + [None])[0]


def coordinate_names(obj: xr.Dataset | xr.DataArray) -> dict[str, str]:
    """The object's own names of its latitude, longitude and (if any) time coordinates.

    Returns:
        ``{"lat": ..., "lon": ...}`` plus ``"time"`` when the object has a time coordinate.

    Raises:
        ValueError: If latitude or longitude is missing, or is 2-D (a curvilinear grid).
    """
    names = {}
    for target, standard_name, candidates, units in (
        ("lat", "latitude", LAT_NAMES, LAT_UNITS),
        ("lon", "longitude", LON_NAMES, LON_UNITS),
    ):
        name = _find_coord(obj, candidates, units, standard_name)
        if name is None:
            _refuse_curvilinear(obj, candidates, units, standard_name)
            raise InputError(
                f"no {standard_name} coordinate (named {candidates} or with units {units[0]}) "
                f"among coordinates {list(map(str, obj.coords))} and dims {list(obj.dims)}"
            )
        names[target] = name
    time = [n for n in TIME_NAMES if n in obj.coords]
    if time:
        names["time"] = time[0]
    return names


def _refuse_curvilinear(
    obj: xr.Dataset | xr.DataArray, names: tuple[str, ...], units: tuple[str, ...], standard: str
) -> None:
    """Refuses a latitude or longitude of two or more dimensions: a curvilinear grid.

    Regional climate models and rotated-pole grids store ``lat(y, x)`` and ``lon(y, x)``.
    """
    variables = dict(obj.coords) | (dict(obj.data_vars) if isinstance(obj, xr.Dataset) else {})
    for name, variable in variables.items():
        if variable.ndim >= 2 and (
            str(name).lower() in names
            or variable.attrs.get("standard_name") == standard
            or variable.attrs.get("units") in units
        ):
            raise InputError(
                f"the grid is curvilinear: {standard} {str(name)!r} is {variable.ndim}-D with "
                f"dims {tuple(map(str, variable.dims))}, and aenp reads only regular latitude-"
                f"longitude grids (1-D latitude and longitude); {REGRID_HINT}"
            )


def _standard_names(obj: xr.Dataset | xr.DataArray) -> xr.Dataset | xr.DataArray:
    """Renames the latitude, longitude and time coordinates (and dims) to lat, lon, time."""
    for target, name in coordinate_names(obj).items():
        if target != "time" and obj[name].dims[0] != name:
            obj = obj.swap_dims({obj[name].dims[0]: name})
        obj = obj.rename({name: target}) if name != target else obj
    return obj


def wrap_longitude(lon: np.ndarray) -> np.ndarray:
    """Longitudes (any convention, e.g. 0-360) as float64 degrees in [-180, 180)."""
    return (np.asarray(lon, dtype=np.float64) + 180.0) % 360.0 - 180.0


def _on_branch(lon: ArrayT, start: float) -> ArrayT:
    """Longitudes moved by whole turns into ``[start, start + 360)``.

    Those already there come back bit for bit (unlike with :func:`wrap_longitude`).
    """
    return lon - FULL_TURN * ((lon - start) // FULL_TURN)


def unwrap_longitude(lon: np.ndarray) -> np.ndarray:
    """Longitudes moved by whole turns onto the shortest arc holding them all.

    The arc starts after the widest gap between neighbouring longitudes around the globe, so
    a grid stored as 150..180 and -180..-110 becomes 150..250. Longitudes in [-180, 180)
    whose widest gap is the one across 180° (every grid that does not cross it, and global
    grids) come back bit for bit.

    Args:
        lon: Degrees east, any convention and order, ``[n]``.

    Returns:
        Float64 degrees ``[n]`` in ``[west, west + 360)``, in the input's order.
    """
    lon = np.asarray(lon, dtype=np.float64)
    if lon.size == 0:
        return lon
    ordered = np.unique(_on_branch(lon, -180.0))
    gaps = np.diff(ordered, append=ordered[0] + FULL_TURN)
    # The gap across 180° wins ties (to rounding), so ordinary grids keep their longitudes.
    widest = len(gaps) - 1 if gaps[-1] >= gaps.max() - CELL_TOLERANCE else int(np.argmax(gaps))
    return _on_branch(lon, ordered[(widest + 1) % len(ordered)])


def normalise_conventions(da: xr.DataArray) -> xr.DataArray:
    """Brings a gridded field into standard conventions; attributes are kept.

    Latitude, longitude and time are found by name or CF attributes and renamed. ERA5's
    ``expver`` is merged (each time step is under one version); a size-1 ensemble dimension,
    other size-1 dimensions and coordinates other than time, lat and lon are dropped; a time
    dimension of length 1 is added when missing.

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
    da = _standard_names(da)
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
    return da.transpose(*DIMS).sortby(["lat", "lon"])


def observed_mask(da: xr.DataArray) -> xr.DataArray:
    """Where the field has a finite value: a boolean DataArray of the field's shape."""
    return np.isfinite(da)


def _extent(da: xr.DataArray) -> str:
    """The field's lat, lon and year ranges, for messages."""
    lat, lon = da["lat"].values, da["lon"].values
    years = f", years {_years(da).min()}-{_years(da).max()}" if "time" in da.coords else ""
    return f"lat [{lat.min()}, {lat.max()}], lon [{lon.min()}, {lon.max()}]{years}"


def _years(da: xr.DataArray) -> np.ndarray:
    """The year of each time step, ``[time]``."""
    return da["time"].dt.year.values


def _require_observed(selection: xr.DataArray, what: str, field: xr.DataArray) -> xr.DataArray:
    """Returns the selection, refusing one that is empty or has no finite value."""
    if selection.size == 0:
        raise InputError(f"{what} selects nothing of the field, whose extent is {_extent(field)}")
    if not observed_mask(selection).any():
        raise InputError(f"{what} selects only missing (NaN) values of the field")
    return selection


def get_region(spec: str | Region) -> Region:
    """A region from a :class:`Region`, a name in :data:`REGIONS` or a "south,north,west,east" box.

    Raises:
        ValueError: If the name is unknown or the box is malformed.
    """
    if isinstance(spec, Region):
        return spec
    if spec in REGIONS:
        return REGIONS[spec]
    if "," not in spec:
        raise InputError(f"unknown region {spec!r}; known: {', '.join(REGIONS)}")
    try:
        south, north, west, east = (float(part) for part in spec.split(","))
    except ValueError as error:
        raise InputError(
            f"a region box must be 'south,north,west,east' (four numbers), got {spec!r}"
        ) from error
    return Region(spec, (south, north), (west, east))


def select_region(da: xr.DataArray, region: str | Region) -> xr.DataArray:
    """The cells of a field whose centres lie in a region (inclusive).

    Args:
        da: A field ``[time, lat, lon]`` or ``[lat, lon]`` in the conventions of
            :func:`normalise_conventions`.
        region: A :class:`Region`, or a name or box for :func:`get_region`.

    Returns:
        The cells, longitudes increasing from the region's west edge: for a region crossing
        the antimeridian, the cells east of it carry their longitude plus 360 (e.g. 150 to 250
        for 150°E to 110°W), so neighbouring cells never differ by a full turn.

    Raises:
        ValueError: If no cell lies in the region or all of its values are missing.
    """
    region = get_region(region)
    west, east = region.lon
    rows = da.sel(lat=slice(*region.lat))
    if region.crosses_antimeridian:
        beyond = rows.sel(lon=slice(None, east))
        lon = beyond["lon"]
        beyond = beyond.assign_coords(lon=("lon", lon.values + FULL_TURN, lon.attrs))
        selection = xr.concat([rows.sel(lon=slice(west, None)), beyond], dim="lon")
    else:
        selection = rows.sel(lon=slice(west, east))
    what = f"region {region.name!r} (lat {region.lat}, lon {region.lon})"
    return _require_observed(selection, what, da)


def covering_region(name: str, a: Region, b: Region) -> Region:
    """The smallest box holding two regions, going the shorter way round in longitude."""
    lat = (min(a.lat[0], b.lat[0]), max(a.lat[1], b.lat[1]))
    (a_west, a_east), (b_west, b_east) = a.lon_span(), b.lon_span()
    # The union on one continuous axis with b moved by no turn or one either way (in this
    # order, so ties keep the box that does not cross the antimeridian).
    spans = [
        (min(a_west, b_west + turn), max(a_east, b_east + turn))
        for turn in (0.0, -FULL_TURN, FULL_TURN)
    ]
    west, east = min(spans, key=lambda span: span[1] - span[0])
    if east - west >= FULL_TURN:
        return Region(name, lat, (-180.0, 180.0))
    turns = FULL_TURN * ((west + 180.0) // FULL_TURN)
    west, east = west - turns, east - turns
    return Region(name, lat, (west, east - FULL_TURN if east > 180.0 else east))


def select_cells(da: xr.DataArray, like: xr.DataArray) -> xr.DataArray:
    """A ``[lat, lon]`` field at the cells of another field, with that field's coordinates.

    ``like`` may come from :func:`select_region` with longitudes past 180°.

    Raises:
        KeyError: If a cell of ``like`` is not a cell of ``da``.
    """
    lon = like["lon"].values
    # Nearest, to a tolerance far below any grid spacing, absorbs the rounding of lon + 360.
    cells = da.sel(
        lat=like["lat"].values,
        lon=_on_branch(lon, -180.0),
        method="nearest",
        tolerance=CELL_TOLERANCE,
    )
    return cells.assign_coords(lat=like["lat"].values, lon=lon)


def select_years(da: xr.DataArray, years: tuple[int, int] | None) -> xr.DataArray:
    """The time steps of a field in an inclusive range of years (any calendar); None keeps all.

    Raises:
        ValueError: If the range is reversed or selects no time step or only missing values.
    """
    if years is None:
        return da
    first, last = years
    if first > last:
        raise InputError(f"years must be (first, last) with first <= last, got {years}")
    year = _years(da)
    selection = da.isel(time=np.flatnonzero((year >= first) & (year <= last)))
    return _require_observed(selection, f"years {first}-{last}", da)


def select_split(da: xr.DataArray, split: Split) -> xr.DataArray:
    """The part of a field in a split's region and years."""
    return select_years(select_region(da, split.region), split.years)


def decimal_years(da: xr.DataArray) -> np.ndarray:
    """Time of each step in years (year plus the elapsed fraction of it), ``[time]``."""
    time = da["time"].dt
    seconds = time.hour * 3600 + time.minute * 60 + time.second
    day = time.dayofyear - 1 + seconds / 86400
    return (time.year + day / time.days_in_year).values.astype(np.float64)


@dataclass(frozen=True)
class Normalisation:
    """Affine maps of values and coordinates to and from a model's units.

    Both spatial axes share one scale, so a shift in degrees is the same shift in model units
    whatever its direction (translation equivariance is not distorted). Longitude is periodic:
    any longitude is first moved by whole turns to within 180° of ``lon_origin``, so 170°W
    and 190°E are one input, and a region crossing the antimeridian is continuous.

    Attributes:
        value_mean: Mean of the training values.
        value_std: Standard deviation of the training values.
        coord_scale: Degrees per unit, for latitude and longitude alike.
        lat_origin: Latitude mapped to 0.
        lon_origin: Longitude mapped to 0 (beyond 180 for a region past the antimeridian).
        time_origin: Time, in years, mapped to 0; None without time.
        time_scale: Years per unit; None without time.
        elevation_origin: Elevation (m) mapped to 0; None without elevation.
        elevation_scale: Metres per unit; None without elevation.
        south: Latitude of the southernmost training cells; None in older saved runs.
        north: Latitude of the northernmost training cells; None in older saved runs.
        west: Longitude of the westernmost training cells; None in older saved runs.
        east: Longitude of the easternmost training cells (beyond 180 for a region past the
            antimeridian); None in older saved runs.
        lat_step: Degrees of latitude per training cell; None in older saved runs.
        lon_step: Degrees of longitude per training cell; None in older saved runs.
    """

    value_mean: float
    value_std: float
    coord_scale: float
    lat_origin: float
    lon_origin: float
    time_origin: float | None = None
    time_scale: float | None = None
    elevation_origin: float | None = None
    elevation_scale: float | None = None
    south: float | None = None
    north: float | None = None
    west: float | None = None
    east: float | None = None
    lat_step: float | None = None
    lon_step: float | None = None

    def __post_init__(self) -> None:
        for name in ("value_std", "coord_scale", "time_scale", "elevation_scale"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InputError(f"{name} must be positive, got {value}")

    @classmethod
    def fit(cls, da: xr.DataArray, elevation: xr.DataArray | None = None) -> Normalisation:
        """Fits to a training field ``[time, lat, lon]``, ignoring missing values.

        The region's centre becomes the spatial origin and half its larger side one unit, so
        the training region maps into [-1, 1]² (its longitudes taken along the shortest arc
        holding them, :func:`unwrap_longitude`); the time span maps to [-1, 1] likewise when the
        field has two or more distinct times. Given the region's ``elevation`` ``[lat, lon]``
        (metres), its mean becomes 0 and its standard deviation (1 km if flat) one unit. The
        region's extent and cell size are kept, so predictions can be checked against them.

        Raises:
            ValueError: If the field has no finite value, is constant, or is a single cell.
        """
        values = da.values[observed_mask(da).values].astype(np.float64)
        if values.size == 0 or values.std() == 0:
            raise InputError(
                f"cannot fit a normalisation: the field has {values.size} finite values, "
                "and they must not all be equal"
            )
        lat, lon = da["lat"].values, unwrap_longitude(da["lon"].values)
        half_side = max(np.ptp(lat), np.ptp(lon)) / 2
        if half_side == 0:
            raise InputError("cannot fit a coordinate scale to a single cell")
        time_origin = time_scale = None
        if "time" in da.coords and len(np.unique(decimal_years(da))) > 1:
            years = decimal_years(da)
            time_origin, time_scale = (years.min() + years.max()) / 2, np.ptp(years) / 2
        return cls.from_dict(
            {
                "value_mean": values.mean(),
                "value_std": values.std(),
                "coord_scale": half_side,
                "lat_origin": (lat.min() + lat.max()) / 2,
                "lon_origin": (lon.min() + lon.max()) / 2,
                "time_origin": time_origin,
                "time_scale": time_scale,
                "south": lat.min(),
                "north": lat.max(),
                "west": lon.min(),
                "east": lon.max(),
                "lat_step": np.ptp(lat) / (len(lat) - 1) if len(lat) > 1 else None,
                "lon_step": np.ptp(lon) / (len(lon) - 1) if len(lon) > 1 else None,
                **({} if elevation is None else _elevation_params(elevation.values)),
            }
        )

    def normalise_values(self, y: ArrayT) -> ArrayT:
        """Values (float, array, tensor or DataArray) in model units."""
        return (y - self.value_mean) / self.value_std

    def denormalise_values(self, y: ArrayT) -> ArrayT:
        """Model-unit values back in the data's units."""
        return y * self.value_std + self.value_mean

    def denormalise_std(self, std: ArrayT) -> ArrayT:
        """A model-unit standard deviation in the data's units (scaled, not shifted)."""
        return std * self.value_std

    def normalise_coords(self, lat: ArrayT, lon: ArrayT) -> tuple[ArrayT, ArrayT]:
        """Latitudes and longitudes (degrees) in model units."""
        return self.normalise_input("lat", lat), self.normalise_input("lon", lon)

    def normalise_input(self, dim: str, values: ArrayT) -> ArrayT:
        """One input in model units.

        ``dim`` is ``"lat"`` or ``"lon"`` (degrees; longitudes in any convention, taken within
        180° of :attr:`lon_origin`), ``"time"`` (years, see :func:`decimal_years`) or
        ``"elevation"`` (metres).

        Raises:
            ValueError: For an unknown input, or time or elevation when not fitted with them.
        """
        if dim == "lat":
            return (values - self.lat_origin) / self.coord_scale
        if dim == "lon":
            nearest = _on_branch(values, self.lon_origin - FULL_TURN / 2)
            return (nearest - self.lon_origin) / self.coord_scale
        if dim not in ("time", "elevation"):
            raise InputError(f"unknown input {dim!r}; expected lat, lon, time or elevation")
        origin, scale = getattr(self, f"{dim}_origin"), getattr(self, f"{dim}_scale")
        if origin is None or scale is None:
            raise InputError(f"this normalisation was fitted without {dim}")
        return (values - origin) / scale

    def denormalise_coords(self, x_lat: ArrayT, x_lon: ArrayT) -> tuple[ArrayT, ArrayT]:
        """Model-unit coordinates back in degrees (longitudes around :attr:`lon_origin`)."""
        return (
            x_lat * self.coord_scale + self.lat_origin,
            x_lon * self.coord_scale + self.lon_origin,
        )

    def normalise_time(self, years: ArrayT) -> ArrayT:
        """Times in years (see :func:`decimal_years`) in model units."""
        return self.normalise_input("time", years)

    def denormalise_time(self, t: ArrayT) -> ArrayT:
        """Model-unit times back in years."""
        if self.time_origin is None or self.time_scale is None:
            raise InputError("this normalisation was fitted without time")
        return t * self.time_scale + self.time_origin

    def to_dict(self) -> dict[str, float | None]:
        """The parameters as JSON-compatible floats."""
        return asdict(self)

    @classmethod
    def from_dict(cls, params: dict[str, float | None]) -> Normalisation:
        """Rebuilds from :meth:`to_dict`'s output.

        Raises:
            ValueError: If a field is missing or unknown.
        """
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is not None}
        if not required <= params.keys() <= names:
            raise InputError(
                f"normalisation parameters must include {sorted(required)} and may include "
                f"{sorted(names - required)}, got {sorted(params)}"
            )
        return cls(**{k: None if v is None else float(v) for k, v in params.items()})


FLAT_ELEVATION_SCALE = 1000.0
"""Metres per unit of elevation when the training region is flat."""


def _elevation_params(metres: np.ndarray) -> dict[str, float]:
    """Origin and scale of elevation: the mean and standard deviation of finite cells."""
    metres = metres[np.isfinite(metres)]
    if metres.size == 0:
        raise InputError("cannot fit an elevation normalisation: no finite elevation")
    return {
        "elevation_origin": metres.mean(),
        "elevation_scale": metres.std() if metres.std() > 0 else FLAT_ELEVATION_SCALE,
    }
