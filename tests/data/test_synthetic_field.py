"""The synthetic large field: lazy, deterministic, CF-compliant, written to zarr chunk by chunk."""

import cf_xarray  # noqa: F401 (registers the .cf accessor)
import numpy as np
import pytest
import xarray as xr

from aenp.data.climate import (
    DIMS,
    coordinate_names,
    open_field,
    synthetic_field,
    write_synthetic_field,
)

SIZES = (40, 30, 40)


@pytest.fixture(scope="module")
def values():
    """The field's values in one chunk, the reference the other chunkings must match."""
    return synthetic_field(*SIZES, chunks=SIZES)["t2m"].values


@pytest.mark.parametrize("chunks", [(7, 11, 13), (1, 30, 40), (40, 1, 3)])
def test_values_do_not_depend_on_the_chunking(values, chunks):
    field = synthetic_field(*SIZES, chunks=chunks)["t2m"]
    assert field.chunks == tuple(
        tuple(min(c, n - start) for start in range(0, n, c))
        for c, n in zip(chunks, SIZES, strict=True)
    )
    np.testing.assert_array_equal(field.values, values)


def test_the_field_is_plausible_and_not_stationary(values):
    field = synthetic_field(*SIZES)["t2m"]
    assert field.dtype == np.float32 and 230 < np.nanmin(values) < np.nanmax(values) < 320
    # Colder to the north.
    assert np.nanmean(values[:, :5]) > np.nanmean(values[:, -5:]) + 5
    # Afternoon warmer than night (local solar time), at every latitude band.
    hours = field["time"].dt.hour.values
    afternoon, night = values[hours == 14], values[hours == 2]
    assert (np.nanmean(afternoon, axis=(0, 2)) > np.nanmean(night, axis=(0, 2)) + 2).all()
    # The noise is a hash of the cell and the seed: another seed moves every observed value.
    other = synthetic_field(*SIZES, seed=1)["t2m"].values
    assert (other != values)[np.isfinite(values)].all()


def test_the_ocean_is_a_third_of_the_cells_at_every_time_step(values):
    ocean = np.isnan(values)
    np.testing.assert_array_equal(ocean, np.broadcast_to(ocean[0], ocean.shape))
    assert 0.2 < ocean[0].mean() < 0.45
    # Smooth: most cells share their state with the cell to the east.
    assert (ocean[0, :, 1:] == ocean[0, :, :-1]).mean() > 0.85


def test_cf_conventions_are_found():
    dataset = synthetic_field(*SIZES)
    field = dataset["t2m"]
    assert field.attrs["units"] == "K" and field.attrs["standard_name"] == "air_temperature"
    assert dataset.attrs["Conventions"].startswith("CF-")
    assert np.issubdtype(dataset["time"].dtype, np.datetime64)
    assert dataset.cf["latitude"].name == "lat" and dataset.cf["longitude"].name == "lon"
    assert dataset.cf["time"].name == "time"
    # Renamed, the coordinates are still found by their CF attributes alone.
    renamed = dataset.rename(lat="row", lon="col")
    assert coordinate_names(renamed) == {"lat": "row", "lon": "col", "time": "time"}
    lat, lon = dataset["lat"].values, dataset["lon"].values
    np.testing.assert_allclose(lat, 35 + (np.arange(30) + 0.5) * 37 / 30, rtol=1e-12)
    np.testing.assert_allclose(lon, -25 + (np.arange(40) + 0.5) * 70 / 40, rtol=1e-12)
    steps = np.diff(dataset["time"].values)
    assert (steps == np.timedelta64(1, "h")).all()


def test_a_zarr_round_trip_equals_the_lazy_field_and_open_field_reads_it(tmp_path, values):
    path = write_synthetic_field(
        tmp_path / "field.zarr", *SIZES, chunks=(7, 11, 13), progress=False
    )
    assert path == tmp_path / "field.zarr"
    assert [p.name for p in tmp_path.iterdir()] == ["field.zarr"]  # nothing partial left
    stored = xr.open_zarr(path)
    assert stored["t2m"].encoding["chunks"] == (7, 11, 13)
    np.testing.assert_array_equal(stored["t2m"].values, values)
    field = open_field(path)
    assert field.dims == DIMS and field.chunks[0] == (7, 7, 7, 7, 7, 5)
    np.testing.assert_array_equal(field.values, values)
    years = field["time"].dt.year.values
    assert (years == 2000).all() and field["time"].dt.hour.values[-1] == 15
    with pytest.raises(ValueError, match="existing folder"):
        write_synthetic_field(path, *SIZES, progress=False)
    np.testing.assert_array_equal(open_field(path).values, values)


@pytest.mark.parametrize(
    ("sizes", "options", "message"),
    [
        ((0, 30, 40), {}, "sizes must be positive"),
        (SIZES, {"chunks": (8, 0, 8)}, "chunks three positive sizes"),
        (SIZES, {"seed": -1}, "seed not negative"),
        (SIZES, {"south": 50.0, "north": 40.0}, "south < north"),
        (SIZES, {"freq": "MS"}, "fixed step such as '1h'"),
    ],
)
def test_bad_arguments_are_named(sizes, options, message):
    with pytest.raises(ValueError, match=message):
        synthetic_field(*sizes, **options)
