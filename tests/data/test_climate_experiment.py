"""The climate experiment's tasks, on a small synthetic field and on the default data."""

import numpy as np
import pytest
import torch
import xarray as xr

from aenp.data.climate import REGIONS, Normalisation
from aenp.data.experiments import Climate, get_experiment
from tests.climate_fields import annual_field, annual_times

YEARS = np.arange(1990, 2010)
LAT = np.arange(30.25, 50, 0.5)  # 40 rows
LON = np.arange(-119.75, -80, 0.5)  # 80 columns


def temperature(lat, lon, year):
    """An analytic field, so task values can be checked against an independent formula."""
    return (
        280
        + 10 * np.sin(np.radians(3 * lat))
        + 4 * np.cos(np.radians(2 * lon))
        + 0.1 * (year - 1990)
    )


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """A 360-day-calendar field, stored north to south and 0-360, with NaN cells in a corner."""
    year, la, lo = np.meshgrid(YEARS, LAT, LON, indexing="ij")
    values = temperature(la, lo, year)
    values[:, :3, :3] = np.nan
    times = annual_times(YEARS)
    da = xr.DataArray(
        values[:, ::-1],
        dims=("time", "latitude", "longitude"),
        coords={"time": times, "latitude": LAT[::-1], "longitude": LON % 360},
        name="t2m",
    )
    path = tmp_path_factory.mktemp("climate") / "field.nc"
    da.to_dataset().to_netcdf(path)
    return str(path)


def make(field, **options):
    defaults = {
        "data": field,
        "train_region": "30,50,-120,-100",
        "ood_region": "30,50,-99,-80",
        "train_years": (1990, 2001),
        "val_years": (2002, 2003),
        "test_years": (2004, 2009),
        "patch": 16,
        "window": 4,
    }
    return Climate(**{**defaults, **options})


def physical(experiment, batch):
    """Values of a 2-D batch back in kelvin, and the cells' latitudes, longitudes."""
    norm = experiment.normalisation
    lat, lon = norm.denormalise_coords(
        batch.axes[0].double().numpy(), batch.axes[1].double().numpy()
    )
    y = norm.denormalise_values(batch.y[..., 0].double().numpy())
    return y, lat, lon


def test_tasks_hold_the_field_at_their_coordinates(field):
    experiment = make(field)
    batch = experiment.sample_train(6, torch.Generator().manual_seed(0))
    y, lat, lon = physical(experiment, batch)
    assert y.shape == (6, 16, 16)
    assert np.all((lon >= -120) & (lon <= -100)) and np.all((lat >= 30) & (lat <= 50))
    used = (batch.context_mask | batch.target_mask).numpy()
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    # Each task is one training year: find it from one cell, then check every used cell.
    for task in range(6):
        cell = np.argwhere(used[task])[0]
        year = 1990 + round(
            (y[task][tuple(cell)] - temperature(la[tuple(cell)], lo[tuple(cell)], 1990)) / 0.1
        )
        assert 1990 <= year <= 2001
        expected = temperature(la, lo, year)
        np.testing.assert_allclose(y[task][used[task]], expected[used[task]], rtol=0, atol=1e-3)


def test_roles_are_disjoint_equal_in_size_and_never_missing_cells(field):
    experiment = make(field, patch=20)
    generator = torch.Generator().manual_seed(1)
    for _ in range(10):
        batch = experiment.sample_train(4, generator)
        y, lat, lon = physical(experiment, batch)
        missing = np.zeros(y.shape, dtype=bool)
        la, lo = np.meshgrid(lat, lon, indexing="ij")
        missing[:] = (la < LAT[3]) & (lo < LON[3])
        assert not bool((batch.context_mask & batch.target_mask).any())
        assert not (batch.context_mask.numpy() & missing).any()
        assert not (batch.target_mask.numpy() & missing).any()
        for mask in (batch.context_mask, batch.target_mask):
            counts = mask.flatten(1).sum(1)
            assert bool((counts == counts[0]).all()) and counts[0] > 0
        assert batch.to_points().xc.shape[1] == int(batch.context_mask[0].sum())


def test_max_targets_caps_the_targets_and_keeps_them_apart_from_the_context(field):
    experiment = make(
        field, dims=3, train_years=(1990, 1999), val_years=(2000, 2003), max_targets=50
    )
    batch = experiment.sample_train(3, torch.Generator().manual_seed(0))
    assert batch.target_mask.flatten(1).sum(1).tolist() == [50, 50, 50]
    assert not bool((batch.context_mask & batch.target_mask).any())
    with pytest.raises(ValueError, match="max_targets must be at least 1"):
        make(field, max_targets=0)


def test_one_spatial_scale_and_the_training_region_in_the_unit_box(field):
    experiment = make(field)
    norm = experiment.normalisation
    x_lat, x_lon = norm.normalise_coords(np.array([30.25, 49.75]), np.array([-119.75, -100.25]))
    assert max(abs(x_lat).max(), abs(x_lon).max()) == pytest.approx(1.0)
    batch = experiment.sample_train(2, torch.Generator().manual_seed(0))
    lat_step, lon_step = (float(a[1] - a[0]) for a in batch.axes)
    assert lat_step == pytest.approx(lon_step)  # 0.5° both ways: one scale for both axes
    assert Normalisation.from_dict(norm.to_dict()) == norm


def test_splits_are_seeded_and_ood_lies_in_its_region(field):
    experiment = make(field)
    ood = experiment.split("ood", 5, 2)
    assert [len(i.batch) for i in ood] == [2, 2, 1]
    again = make(field).split("ood", 5, 2)
    assert all(torch.equal(a.batch.y, b.batch.y) for a, b in zip(ood, again, strict=True))
    for item in ood:
        y, lat, lon = physical(experiment, item.batch)
        assert np.all((lon >= -99) & (lon <= -80))
        used = (item.batch.context_mask | item.batch.target_mask).numpy()
        la, lo = np.meshgrid(lat, lon, indexing="ij")
        trend = (y - temperature(la, lo, 1990))[used] / 0.1  # years since 1990
        assert trend.min() > 2004 - 1990 - 0.1 and trend.max() < 2009 - 1990 + 0.1
    with pytest.raises(ValueError, match="unknown climate split 'train'"):
        experiment.split("train", 4, 4)


def test_three_dimensional_tasks_are_windows_of_consecutive_years(field):
    experiment = make(field, dims=3, train_years=(1990, 1999), val_years=(2000, 2003))
    batch = experiment.sample_train(3, torch.Generator().manual_seed(0))
    assert batch.y.shape == (3, 4, 16, 16, 1) and batch.dim_x == 3
    norm = experiment.normalisation
    years = norm.denormalise_time(batch.axes[0].double().numpy())
    np.testing.assert_allclose(np.diff(years), 1.0, atol=1e-4)


def altitude(lat, lon):
    """An analytic elevation (m), bilinear in lat and lon so interpolation is exact."""
    return 800 + 40 * (lat - 30) - 15 * (lon + 120) + 0.5 * (lat - 30) * (lon + 120)


@pytest.fixture(scope="module")
def elevation_file(tmp_path_factory):
    """WFDE5-style ``ASurf`` on a coarser grid than the field, 0-360 longitudes."""
    lat, lon = np.arange(29.0, 52.0, 1.5), np.arange(-121.0, -78.0, 2.0)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    ds = xr.Dataset(
        {"ASurf": (("lat", "lon"), altitude(la, lo), {"units": "m"})},
        coords={"lat": lat, "lon": lon % 360},
    )
    path = tmp_path_factory.mktemp("elevation") / "asurf.nc"
    ds.to_netcdf(path)
    return str(path)


def test_four_dimensional_tasks_carry_each_cells_elevation(field, elevation_file):
    experiment = make(
        field, dims=4, elevation=elevation_file, train_years=(1990, 1999), val_years=(2000, 2003)
    )
    norm = experiment.normalisation
    for split in ("train", "ood"):
        batch = (
            experiment.sample_train(3, torch.Generator().manual_seed(1))
            if split == "train"
            else experiment.split("ood", 3, 3)[0].batch
        )
        assert batch.dim_x == 4 and batch.extra_inputs.shape == (4, 16, 16, 1)
        lat, lon = norm.denormalise_coords(
            batch.axes[1].double().numpy(), batch.axes[2].double().numpy()
        )
        la, lo = np.meshgrid(lat, lon, indexing="ij")
        metres = batch.extra_inputs[..., 0].double().numpy() * norm.elevation_scale
        metres += norm.elevation_origin
        for step in metres:  # the same elevation at every time step of the window
            np.testing.assert_allclose(step, altitude(la, lo), rtol=1e-5)
        points = batch.to_points()
        assert points.xc.shape[-1] == 4
    # The training region's elevation is standardised.
    train = altitude(*np.meshgrid(LAT, LON[LON <= -100], indexing="ij"))
    assert norm.elevation_origin == pytest.approx(train.mean(), rel=1e-9)
    assert norm.elevation_scale == pytest.approx(train.std(), rel=1e-9)


def test_four_dimensional_tasks_need_elevation_at_every_observed_cell(field, tmp_path):
    lat, lon = np.arange(35.0, 52.0, 1.0), np.arange(-121.0, -78.0, 1.0)
    ds = xr.Dataset(
        {"orog": (("lat", "lon"), np.full((len(lat), len(lon)), 100.0))},
        coords={"lat": lat, "lon": lon},
    )
    ds.to_netcdf(tmp_path / "north_only.nc")
    # The 9 rows south of 34.5°N (half a cell beyond 35°N) of 80 cells, less the 9 NaN ones.
    with pytest.raises(ValueError, match=r"elevation from .* is missing at 711 observed cell"):
        make(field, dims=4, elevation=str(tmp_path / "north_only.nc"))


PACIFIC_LAT = np.arange(-9.75, 10, 0.5)  # 40 rows
PACIFIC_LON = np.arange(140.25, 260, 0.5)  # 240 columns, 140°E to 100°W across 180°


def pacific_altitude(lat, lon):
    """An elevation (m), periodic in longitude like the globe."""
    return 500 + 20 * lat + 300 * np.sin(np.radians(lon))


@pytest.fixture(scope="module")
def pacific(tmp_path_factory):
    """A Pacific field with its own elevation, stored 0-360 as regional downloads are."""
    year, la, lo = np.meshgrid(YEARS, PACIFIC_LAT, PACIFIC_LON, indexing="ij")
    la2, lo2 = np.meshgrid(PACIFIC_LAT, PACIFIC_LON, indexing="ij")
    ds = xr.Dataset(
        {
            "t2m": (("time", "lat", "lon"), temperature(la, lo, year)),
            "ASurf": (("lat", "lon"), pacific_altitude(la2, lo2), {"units": "m"}),
        },
        coords={
            "time": annual_times(YEARS),
            "lat": PACIFIC_LAT,
            "lon": PACIFIC_LON,
        },
    )
    path = tmp_path_factory.mktemp("pacific") / "pacific.nc"
    ds.to_netcdf(path)
    return str(path)


def test_regions_across_the_antimeridian_give_continuous_tasks(pacific):
    experiment = make(
        pacific,
        dims=4,
        train_region="-10,10,172,-172",
        ood_region="-10,10,-170,-140",
        window=2,
    )
    norm = experiment.normalisation
    assert (norm.lon_origin, norm.coord_scale) == (180.0, 9.75)  # 172.25°E to 172.25°W
    generator, crossing = torch.Generator().manual_seed(0), 0
    batches = [experiment.sample_train(2, generator) for _ in range(8)]
    batches += [item.batch for item in experiment.split("ood", 4, 2)]
    for batch in batches:
        _, x_lat, x_lon = batch.axes
        lat, lon = norm.denormalise_coords(x_lat.double().numpy(), x_lon.double().numpy())
        # Cells half a degree apart, never a jump of a full turn.
        np.testing.assert_allclose(np.diff(lon), 0.5, rtol=1e-5)
        crossing += lon.min() < 180 < lon.max()
        la, lo = np.meshgrid(lat, lon, indexing="ij")
        metres = batch.extra_inputs[0, ..., 0].double().numpy() * norm.elevation_scale
        np.testing.assert_allclose(
            metres + norm.elevation_origin, pacific_altitude(la, lo), rtol=1e-5
        )
        used = (batch.context_mask | batch.target_mask)[0, 0].numpy()
        kelvin = norm.denormalise_values(batch.y[0, 0, ..., 0].double().numpy())
        trend = (kelvin - temperature(la, lo, 1990))[used] / 0.1  # years since 1990
        np.testing.assert_allclose(trend, np.round(trend[0]), atol=0.01)
    assert crossing > 0
    figure = experiment.figure_field()
    np.testing.assert_allclose(figure["lon"].values, np.arange(172.25, 220, 0.5), rtol=1e-12)
    assert experiment.train_edge == 188.0  # 172°W on the figure's axis


def test_ood_patches_opposite_the_training_region_stay_continuous(tmp_path):
    lat, lon = np.arange(-9.0, 10.0, 2.0), np.arange(0.0, 360.0, 2.0)  # a global field
    year, la, lo = np.meshgrid(YEARS, lat, lon, indexing="ij")
    da = annual_field(temperature(la, lo, year), YEARS, lat, lon)
    da.to_netcdf(tmp_path / "global.nc")
    # Trained around 0°; the OOD region straddles 180°, where model longitudes turn over.
    experiment = make(
        str(tmp_path / "global.nc"),
        train_region="-10,10,-10,10",
        ood_region="-10,10,170,-170",
        patch=8,
    )
    for item in experiment.split("ood", 4, 2):
        steps = np.diff(item.batch.axes[1].double().numpy())
        np.testing.assert_allclose(steps, 2.0 / experiment.normalisation.coord_scale, rtol=1e-5)


def test_bad_options_are_named(field):
    with pytest.raises(ValueError, match="dims must be 2"):
        make(field, dims=5)
    with pytest.raises(ValueError, match="too few for patches of 48×48"):
        make(field, patch=48)
    with pytest.raises(ValueError, match="context_fraction"):
        make(field, context_fraction=(0.5, 1.0))
    with pytest.raises(ValueError, match="years 2050-2060"):
        make(field, test_years=(2050, 2060))
    with pytest.raises(ValueError, match="unknown region 'atlantis'"):
        make(field, ood_region="atlantis")


def test_default_data_trains_west_and_tests_east():
    pytest.importorskip("iris_sample_data", reason='the default data needs "aenp[climate]"')
    experiment = get_experiment("climate")
    norm = experiment.normalisation
    assert 270 < norm.value_mean < 300 and norm.coord_scale == pytest.approx(22.5)
    for split, (west, east) in (("test", REGIONS["na_west"].lon), ("ood", REGIONS["na_east"].lon)):
        (item,) = experiment.split(split, 2, 2)
        _, lon = norm.denormalise_coords(item.batch.axes[0].numpy(), item.batch.axes[1].numpy())
        assert item.batch.y.shape == (2, 24, 24, 1)
        assert west - 1e-3 <= lon.min() and lon.max() <= east + 1e-3


def test_default_data_in_four_dimensions_uses_the_terrain_map():
    pytest.importorskip("iris_sample_data", reason='the default data needs "aenp[climate]"')
    pytest.importorskip("pvlib", reason='the terrain map needs "aenp[climate]"')
    experiment = get_experiment("climate", dims=4, max_targets=64)
    elevation = experiment.elevation
    assert elevation.shape == (37, 49)
    # The Rockies stand above 1.5 km and the Great Plains lie below, within the west region.
    rockies = elevation.sel(lat=slice(37, 45), lon=slice(-112, -105)).mean()
    plains = elevation.sel(lat=slice(37, 45), lon=slice(-100, -92)).mean()
    assert rockies > 1500 > 600 > plains
    (item,) = experiment.split("ood", 2, 2)
    assert item.batch.dim_x == 4 and item.batch.extra_inputs.shape == (8, 24, 24, 1)
