"""Regions and years: latitude-longitude boxes and year ranges of a field.

A region whose west edge lies east of its east edge crosses the antimeridian (e.g. 150°E to
110°W); its selection continues past 180° (to 250°), so longitudes increase without a jump.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from aenp.data.climate.cf import describe_extent, field_years, observed_mask
from aenp.data.climate.chunks import as_slice, is_lazy
from aenp.data.climate.longitude import CELL_TOLERANCE, FULL_TURN, on_branch
from aenp.errors import InputError


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


def _require_observed(selection: xr.DataArray, what: str, field: xr.DataArray) -> xr.DataArray:
    """Returns the selection, refusing one that is empty or (in memory) has no finite value.

    A lazy selection's values are not read here: that would read all of them.
    """
    if selection.size == 0:
        raise InputError(
            f"{what} selects nothing of the field, whose extent is {describe_extent(field)}"
        )
    if not is_lazy(selection) and not observed_mask(selection).any():
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
        ValueError: If no cell lies in the region or, for a field in memory, all of its values
            are missing (a lazy field's values are not read).
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
        lon=on_branch(lon, -180.0),
        method="nearest",
        tolerance=CELL_TOLERANCE,
    )
    return cells.assign_coords(lat=like["lat"].values, lon=lon)


def select_years(da: xr.DataArray, years: tuple[int, int] | None) -> xr.DataArray:
    """The time steps of a field in an inclusive range of years (any calendar); None keeps all.

    Raises:
        ValueError: If the range is reversed or selects no time step or (for a field in memory,
            as in :func:`select_region`) only missing values.
    """
    if years is None:
        return da
    first, last = years
    if first > last:
        raise InputError(f"years must be (first, last) with first <= last, got {years}")
    year = field_years(da)
    selection = da.isel(time=as_slice(np.flatnonzero((year >= first) & (year <= last))))
    return _require_observed(selection, f"years {first}-{last}", da)
