"""Normalisation: affine maps of values and coordinates to and from a model's units."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from aenp.data.climate.cf import decimal_years, observed_mask
from aenp.data.climate.chunks import is_lazy, streaming_blocks
from aenp.data.climate.longitude import FULL_TURN, ArrayT, on_branch, unwrap_longitude
from aenp.errors import InputError


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
    def fit(
        cls, da: xr.DataArray, elevation: xr.DataArray | None = None, progress: bool = False
    ) -> Normalisation:
        """Fits to a training field ``[time, lat, lon]``, ignoring missing values.

        The values' mean and standard deviation come from :func:`value_moments`: of a lazy
        field, in one pass over blocks of time (with a progress bar if ``progress``). The
        region's centre becomes the spatial origin and half its larger side one unit, so the
        training region maps into [-1, 1]² (its longitudes taken along the shortest arc holding
        them, :func:`unwrap_longitude`); the time span maps to [-1, 1] likewise when the field
        has two or more distinct times. Given the region's ``elevation`` ``[lat, lon]``
        (metres), its mean becomes 0 and its standard deviation (1 km if flat) one unit. The
        region's extent and cell size are kept, so predictions can be checked against them.

        Raises:
            ValueError: If the field has no finite value, is constant, or is a single cell.
        """
        count, mean, std = value_moments(da, progress)
        if count == 0 or std == 0:
            raise InputError(
                f"cannot fit a normalisation: the field has {count} finite values, "
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
                "value_mean": mean,
                "value_std": std,
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
            nearest = on_branch(values, self.lon_origin - FULL_TURN / 2)
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


def value_moments(da: xr.DataArray, progress: bool = False) -> tuple[int, float, float]:
    """Count, mean and standard deviation of a field's finite values, in float64.

    A field in memory is reduced at once. A lazy one is read in one pass over blocks of whole
    time chunks (:func:`~aenp.data.climate.chunks.streaming_blocks`): each block's count, mean
    and sum of squared deviations, merged with the pairwise formula of Chan, Golub and LeVeque
    (1979), which is stable however many blocks there are; the result equals the in-memory one
    to float64 rounding.
    """
    if not is_lazy(da):
        values = da.values[observed_mask(da).values].astype(np.float64)
        return (values.size, values.mean(), values.std()) if values.size else (0, np.nan, np.nan)
    count, mean, squares = 0, 0.0, 0.0
    blocks = streaming_blocks(da)
    for block in tqdm(blocks, desc="normalisation", unit="block", disable=not progress):
        values = da.isel(time=block).values
        values = values[np.isfinite(values)].astype(np.float64)
        if values.size == 0:
            continue
        block_mean = values.mean()
        delta = block_mean - mean
        total = count + values.size
        squares += ((values - block_mean) ** 2).sum() + delta**2 * count * values.size / total
        mean += delta * values.size / total
        count = total
    return count, mean, (np.sqrt(squares / count) if count else np.nan)


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
