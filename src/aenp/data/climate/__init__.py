"""Real gridded temperature: CF-style fields, elevation, regions and years, normalisation.

Any CF-style gridded field (netCDF or zarr) is opened as a DataArray with dims exactly
``("time", "lat", "lon")``: float64 ``lat`` ascending (south to north), float64 ``lon`` in
[-180, 180) ascending, and ``time`` kept as cftime objects so 360-day and other calendars work.
The names of ERA5 (old and new Copernicus CDS files), WFDE5, WeatherBench2/ARCO-ERA5 and the
iris sample data are recognised, as are coordinates marked by their CF attributes. Missing
values (e.g. ocean in land-only products) stay NaN; :func:`observed_mask` marks the finite
ones. A region whose west edge lies east of its east edge crosses the antimeridian (e.g. 150°E
to 110°W); its selection continues past 180° (to 250°), so longitudes increase without a jump,
and model coordinates treat longitude as periodic.

A field larger than memory stays lazy (dask-backed) and is read chunk by chunk
(:mod:`~aenp.data.climate.chunks`); :func:`synthetic_field` builds a CF-compliant one of any
size without a download, and :func:`write_synthetic_field` writes it to a zarr store.

Surface elevation, the fourth input of 4-D tasks, comes from a file (:func:`open_elevation`:
WFDE5 ``ASurf``, ERA5 or WeatherBench2 surface geopotential, ``orog``) or, offline, from the
global 1/12° terrain map that pvlib ships (:func:`terrain_elevation`), and is interpolated to
any point with :func:`elevation_at`.

The default data, available offline, is the HadCM3 annual-mean 1.5 m air temperature over North
America shipped by ``iris-sample-data`` (:data:`DEFAULT_DATASET`). The :class:`Climate`
experiment's default split trains on the western half (``na_west``) in 1860-2039, validates
there in 2040-2059, tests in distribution there in 2060-2099, and tests out of distribution on
the eastern half (``na_east``) in 2060-2099 — the analogue of the paper's Europe to central US.

One concern per module: :mod:`~aenp.data.climate.cf` (conventions), :mod:`~aenp.data.climate.io`
(files), :mod:`~aenp.data.climate.chunks` (reading lazy fields),
:mod:`~aenp.data.climate.terrain` (elevation), :mod:`~aenp.data.climate.regions` (regions and
years), :mod:`~aenp.data.climate.normalisation`, :mod:`~aenp.data.climate.longitude`,
:mod:`~aenp.data.climate.default_data`, :mod:`~aenp.data.climate.synthetic` (the synthetic
field) and :mod:`~aenp.data.climate.experiment` (the experiment).
"""

from aenp.data.climate.cf import (
    DIMS,
    ENSEMBLE_DIM,
    EXPVER_DIM,
    LAT_NAMES,
    LAT_UNITS,
    LON_NAMES,
    LON_UNITS,
    REGRID_HINT,
    TIME_NAMES,
    coordinate_names,
    decimal_years,
    normalise_conventions,
    observed_mask,
)
from aenp.data.climate.chunks import (
    CACHE_BYTES,
    OBSERVED_SAMPLE_STEPS,
    BlockCache,
    ChunkReader,
    observed_fraction,
    time_blocks,
)
from aenp.data.climate.default_data import DEFAULT_DATASET, default_data_path
from aenp.data.climate.experiment import MAX_IN_MEMORY_BYTES, MIN_OBSERVED_FRACTION, Climate
from aenp.data.climate.io import (
    ELEVATION_VARIABLES,
    GEOPOTENTIAL_UNITS,
    GRAVITY,
    ZARR_MARKERS,
    FieldSource,
    elevation_variables,
    open_elevation,
    open_field,
)
from aenp.data.climate.longitude import (
    CELL_TOLERANCE,
    FULL_TURN,
    ArrayT,
    unwrap_longitude,
    wrap_longitude,
)
from aenp.data.climate.normalisation import FLAT_ELEVATION_SCALE, Normalisation, value_moments
from aenp.data.climate.regions import (
    REGIONS,
    Region,
    covering_region,
    get_region,
    select_cells,
    select_region,
    select_years,
)
from aenp.data.climate.synthetic import synthetic_field, write_synthetic_field
from aenp.data.climate.terrain import TERRAIN_RESOLUTION, elevation_at, terrain_elevation

__all__ = [
    "CACHE_BYTES",
    "CELL_TOLERANCE",
    "DEFAULT_DATASET",
    "DIMS",
    "ELEVATION_VARIABLES",
    "ENSEMBLE_DIM",
    "EXPVER_DIM",
    "FLAT_ELEVATION_SCALE",
    "FULL_TURN",
    "GEOPOTENTIAL_UNITS",
    "GRAVITY",
    "LAT_NAMES",
    "LAT_UNITS",
    "LON_NAMES",
    "LON_UNITS",
    "MAX_IN_MEMORY_BYTES",
    "MIN_OBSERVED_FRACTION",
    "OBSERVED_SAMPLE_STEPS",
    "REGIONS",
    "REGRID_HINT",
    "TERRAIN_RESOLUTION",
    "TIME_NAMES",
    "ZARR_MARKERS",
    "ArrayT",
    "BlockCache",
    "ChunkReader",
    "Climate",
    "FieldSource",
    "Normalisation",
    "Region",
    "coordinate_names",
    "covering_region",
    "decimal_years",
    "default_data_path",
    "elevation_at",
    "elevation_variables",
    "get_region",
    "normalise_conventions",
    "observed_fraction",
    "observed_mask",
    "open_elevation",
    "open_field",
    "select_cells",
    "select_region",
    "select_years",
    "synthetic_field",
    "terrain_elevation",
    "time_blocks",
    "unwrap_longitude",
    "value_moments",
    "wrap_longitude",
    "write_synthetic_field",
]

_REMOVED = ("DEFAULT_SPLITS", "Split", "select_split")
"""Names this package no longer has: the climate experiment never used them."""


def __getattr__(name: str) -> object:
    """Says what replaces a removed name."""
    if name in _REMOVED:
        raise ImportError(
            f"aenp.data.climate.{name} was removed: select a region and years with "
            "select_years(select_region(field, region), (first, last)), or give the Climate "
            "experiment train_region, ood_region, train_years, val_years and test_years"
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
