import json
import sys
import warnings
from dataclasses import dataclass

import cftime
import numpy as np
import pytest
import xarray as xr

from aenp.data.climate import (
    DIMS,
    GRAVITY,
    REGIONS,
    Normalisation,
    Region,
    covering_region,
    decimal_years,
    default_data_path,
    elevation_at,
    elevation_variables,
    get_region,
    normalise_conventions,
    observed_mask,
    open_elevation,
    open_field,
    select_region,
    select_years,
    terrain_elevation,
    unwrap_longitude,
)
from aenp.errors import InputError

YEARS = np.arange(2000, 2004)


def f(lat, lon, year):
    """Periodic in longitude, asymmetric in latitude, changing with the year."""
    phi, lam = np.radians(lat), np.radians(lon)
    return 280 + 20 * np.sin(phi) + 5 * np.cos(lam) + 3 * np.sin(2 * lam + phi) + (year - 2000)


def grid_values(years, lat, lon):
    """f on a ``[time, lat, lon]`` grid."""
    year, la, lo = np.meshgrid(years, lat, lon, indexing="ij")
    return f(la, lo, year)


def datetimes(years):
    return np.array([f"{y}-07-01" for y in years], dtype="datetime64[ns]")


@dataclass
class Case:
    path: object
    lat: np.ndarray
    lon: np.ndarray
    years: np.ndarray | None
    ocean: object = None  # (lat, lon) -> bool, where the file holds NaN


def new_cds_era5(tmp_path):
    lat, lon = np.arange(60.0, 29.0, -2.5), np.arange(0.0, 360.0, 22.5)
    data = grid_values(YEARS, lat, lon)[None]
    ds = xr.Dataset(
        {"t2m": (("number", "valid_time", "latitude", "longitude"), data, {"units": "K"})},
        coords={
            "number": [0],
            "valid_time": datetimes(YEARS),
            "latitude": lat,
            "longitude": lon,
            "expver": ("valid_time", ["0001"] * len(YEARS)),
        },
    )
    ds.to_netcdf(tmp_path / "era5_new.nc")
    return Case(tmp_path / "era5_new.nc", lat, lon, YEARS)


def old_era5(tmp_path):
    lat, lon = np.arange(50.0, -51.0, -10.0), np.arange(-180.0, 180.0, 30.0)
    ds = xr.Dataset(
        {"t2m": (("time", "latitude", "longitude"), grid_values(YEARS, lat, lon), {"units": "K"})},
        coords={"time": datetimes(YEARS), "latitude": lat, "longitude": lon},
    )
    ds.to_netcdf(tmp_path / "era5_old.nc")
    return Case(tmp_path / "era5_old.nc", lat, lon, YEARS)


def wfde5(tmp_path):
    lat, lon = np.arange(-10.25, 20.0, 0.5), np.arange(-100.25, -40.0, 0.5)

    def ocean(la, lo):
        return lo < -60

    data = grid_values(YEARS, lat, lon)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    data[:, ocean(la, lo)] = np.nan
    ds = xr.Dataset(
        {
            "Tair": (("time", "lat", "lon"), data, {"units": "K"}),
            "ASurf": (("lat", "lon"), 100 * np.abs(la), {"units": "m"}),
        },
        coords={"time": datetimes(YEARS), "lat": lat, "lon": lon},
    )
    ds.to_netcdf(tmp_path / "wfde5.nc", engine="h5netcdf")
    return Case(tmp_path / "wfde5.nc", lat, lon, YEARS, ocean)


def weatherbench2(tmp_path):
    lat, lon = np.arange(90.0, -91.0, -15.0), np.arange(0.0, 360.0, 45.0)
    data = grid_values(YEARS, lat, lon).transpose(0, 2, 1)
    ds = xr.Dataset(
        {
            "2m_temperature": (("time", "longitude", "latitude"), data, {"units": "K"}),
            "geopotential_at_surface": (("latitude", "longitude"), np.zeros((13, 8))),
        },
        coords={"time": datetimes(YEARS), "latitude": lat, "longitude": lon},
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
        ds.to_zarr(tmp_path / "wb2.zarr")
    return Case(tmp_path / "wb2.zarr", lat, lon, YEARS)


def hadcm3_360_day(tmp_path):
    lat, lon = np.arange(15.0, 61.0, 5.0), np.arange(225.0, 316.0, 15.0)
    years = np.arange(1860, 1866)
    times = [cftime.Datetime360Day(int(y), 6, 1) for y in years]
    ds = xr.Dataset(
        {
            "air_temperature": (
                ("time", "latitude", "longitude"),
                grid_values(years, lat, lon).astype(np.float32),
                {"units": "K", "standard_name": "air_temperature"},
            )
        },
        coords={
            "time": times,
            "latitude": lat.astype(np.float32),
            "longitude": lon.astype(np.float32),
            "forecast_period": ("time", np.arange(len(years))),
            "height": 1.5,
        },
    )
    ds["time"].encoding = {"calendar": "360_day", "units": "days since 1850-01-01"}
    ds.to_netcdf(tmp_path / "hadcm3.nc")
    return Case(tmp_path / "hadcm3.nc", lat, lon, years)


def unusual_names(tmp_path):
    lat, lon = np.arange(-20.0, 21.0, 10.0), np.arange(100.0, 260.0, 40.0)
    ds = xr.Dataset(
        {"temp": (("y", "x"), grid_values([2000], lat, lon)[0], {"units": "K"})},
        coords={
            "y": ("y", lat, {"standard_name": "latitude"}),
            "x": ("x", lon, {"units": "degrees_east"}),
        },
    )
    ds.to_netcdf(tmp_path / "unusual.nc")
    return Case(tmp_path / "unusual.nc", lat, lon, None)


def axis_types_and_long_names(tmp_path):
    # Coordinates marked only by netCDF-Java's _CoordinateAxisType or a CF long_name.
    lat, lon = np.arange(-20.0, 21.0, 10.0), np.arange(100.0, 260.0, 40.0)
    ds = xr.Dataset(
        {"temp": (("row", "col"), grid_values([2000], lat, lon)[0], {"units": "K"})},
        coords={
            "row": ("row", lat, {"_CoordinateAxisType": "Lat"}),
            "col": ("col", lon, {"long_name": "longitude"}),
        },
    )
    ds.to_netcdf(tmp_path / "cdm.nc")
    return Case(tmp_path / "cdm.nc", lat, lon, None)


CASES = [
    new_cds_era5,
    old_era5,
    wfde5,
    weatherbench2,
    hadcm3_360_day,
    unusual_names,
    axis_types_and_long_names,
]


@pytest.mark.parametrize("make", CASES, ids=lambda make: make.__name__)
def test_open_field_normalises_conventions_and_keeps_values(make, tmp_path):
    case = make(tmp_path)
    da = open_field(case.path)
    assert da.dims == DIMS and da.attrs["units"] == "K"
    lat, lon = da["lat"].values, da["lon"].values
    assert lat.dtype == np.float64 and lon.dtype == np.float64
    assert (np.diff(lat) > 0).all() and (np.diff(lon) > 0).all()
    assert lon.min() >= -180 and lon.max() < 180
    np.testing.assert_array_equal(np.sort(lat), np.sort(case.lat))
    np.testing.assert_array_equal(np.sort(lon % 360), np.sort(case.lon % 360))
    if case.years is None:
        assert da.sizes["time"] == 1
        years = np.array([2000])
    else:
        assert isinstance(da["time"].values[0], cftime.datetime)
        years = da["time"].dt.year.values
        np.testing.assert_array_equal(years, case.years)
    expected = grid_values(years, lat, lon)
    if case.ocean is not None:
        la, lo = np.meshgrid(lat, lon, indexing="ij")
        expected[:, case.ocean(la, lo)] = np.nan
    np.testing.assert_allclose(da.values, expected, rtol=1e-6)


def test_360_day_calendar_is_kept(tmp_path):
    da = open_field(hadcm3_360_day(tmp_path).path)
    assert da["time"].dt.calendar == "360_day"
    assert all(isinstance(t, cftime.Datetime360Day) for t in da["time"].values)


def test_elevation_is_not_picked_by_default_but_can_be_named(tmp_path):
    case = wfde5(tmp_path)
    assert open_field(case.path).name == "Tair"
    elevation = open_field(case.path, "ASurf")
    assert elevation.dims == DIMS and elevation.sizes["time"] == 1
    expected = 100 * np.abs(elevation["lat"].values)[:, None]
    np.testing.assert_array_equal(elevation.values[0], np.broadcast_to(expected, (61, 121)))


def height(lat, lon):
    """A surface elevation (m) that changes along both axes."""
    return 1000 + 30 * lat + 5 * ((lon + 180) % 360 - 180)


def test_open_elevation_reads_metres_and_surface_geopotential(tmp_path):
    case = wfde5(tmp_path)
    assert elevation_variables(case.path) == ["ASurf"]
    asurf = open_elevation(case.path)
    assert asurf.dims == ("lat", "lon") and asurf.attrs["units"] == "m"
    expected = np.broadcast_to(100 * np.abs(asurf["lat"].values)[:, None], asurf.shape)
    np.testing.assert_array_equal(asurf.values, expected)
    # A new-CDS ERA5 geopotential: north to south, 0-360, valid_time, in m² s⁻².
    lat, lon = np.arange(60.0, 29.0, -1.0), np.arange(0.0, 360.0, 2.0)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    ds = xr.Dataset(
        {
            "z": (
                ("valid_time", "latitude", "longitude"),
                GRAVITY * height(la, lo)[None],
                {"units": "m**2 s**-2"},
            )
        },
        coords={"valid_time": datetimes(YEARS[:1]), "latitude": lat, "longitude": lon},
    )
    ds.to_netcdf(tmp_path / "z.nc")
    z = open_elevation(tmp_path / "z.nc")
    la, lo = np.meshgrid(z["lat"].values, z["lon"].values, indexing="ij")
    np.testing.assert_allclose(z.values, height(la, lo), rtol=1e-12)
    assert z["lat"].values[0] == 30.0 and z["lon"].values[0] == -180.0
    with pytest.raises(ValueError, match="found no elevation variable"):
        open_elevation(old_era5(tmp_path).path)
    with pytest.raises(ValueError, match="has no variable 'orog'"):
        open_elevation(case.path, "orog")


def test_elevation_at_interpolates_bilinearly_and_names_points_outside():
    lat, lon = np.arange(30.0, 51.0, 2.0), np.arange(-120.0, -89.0, 3.0)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    field = xr.DataArray(height(la, lo), coords={"lat": lat, "lon": lon}, dims=("lat", "lon"))
    rng = np.random.default_rng(0)
    points_lat, points_lon = rng.uniform(30, 50, (4, 5)), rng.uniform(-120, -90, (4, 5))
    # Bilinear interpolation of a bilinear function is exact; 0-360 longitudes are wrapped.
    values = elevation_at(field, points_lat, points_lon + 360)
    np.testing.assert_allclose(values, height(points_lat, points_lon), rtol=1e-12)
    # Up to half a cell beyond the outermost centres, the nearest cell.
    assert elevation_at(field, np.array([50.9]), np.array([-90.0]))[0] == height(50, -90)
    with pytest.raises(ValueError, match="1 point\\(s\\) lie outside the elevation field"):
        elevation_at(field, np.array([40.0, 60.0]), np.array([-100.0, -100.0]))
    assert np.isnan(
        elevation_at(field, np.array([60.0]), np.array([-100.0]), allow_missing=True)[0]
    )


def test_elevation_at_points_of_a_field_across_the_antimeridian():
    lat, arc = np.arange(0.0, 11.0, 2.0), np.arange(170.0, 191.0, 2.0)  # 170°E to 170°W
    la, lo = np.meshgrid(lat, arc, indexing="ij")
    field = xr.DataArray(
        1000 + 30 * la + 5 * lo, coords={"lat": lat, "lon": arc}, dims=("lat", "lon")
    )
    points_lat, points_lon = np.array([3.0, 5.0, 7.0]), np.array([175.0, -175.0, 185.0])
    np.testing.assert_allclose(
        elevation_at(field, points_lat, points_lon),
        1000 + 30 * points_lat + 5 * np.array([175.0, 185.0, 185.0]),
        rtol=1e-12,
    )


def test_terrain_elevation_averages_the_terrain_map_over_each_cell():
    pytest.importorskip("pvlib", reason='the terrain map needs "aenp[climate]"')
    from pvlib.location import lookup_altitude

    lat, lon = np.array([38.75, 40.0, 41.25]), np.array([-118.125, -116.25, -114.375])
    terrain = terrain_elevation(lat, lon)
    # Independently: pvlib's own lookup at every 1/12° map cell inside the middle cell.
    fine_lat = 90 - (np.arange(2160) + 0.5) / 12
    fine_lon = -180 + (np.arange(4320) + 0.5) / 12
    inside_lat = fine_lat[(fine_lat >= 40 - 0.625) & (fine_lat < 40 + 0.625)]
    inside_lon = fine_lon[(fine_lon >= -116.25 - 0.9375) & (fine_lon < -116.25 + 0.9375)]
    expected = np.mean([lookup_altitude(a, b) for a in inside_lat for b in inside_lon])
    assert terrain.values[1, 1] == pytest.approx(expected, rel=1e-12)
    assert 1000 < expected < 2500  # the Great Basin
    with pytest.raises(ValueError, match="finer than the terrain map"):
        terrain_elevation(np.array([40.0, 40.01]), np.array([-100.0, -99.99]))


def test_terrain_elevation_of_a_grid_across_the_antimeridian():
    pytest.importorskip("pvlib", reason='the terrain map needs "aenp[climate]"')
    lat = np.array([65.0, 67.0])  # Chukotka, where land lies on both sides of 180°
    west, east = np.arange(171.0, 180.0, 2.0), np.arange(181.0, 190.0, 2.0)
    # Each half alone is an ordinary grid, its outer cells bounded at 180°.
    expected = np.concatenate(
        [terrain_elevation(lat, west).values, terrain_elevation(lat, east - 360).values], axis=1
    )
    assert expected.max() > 100
    # The same cells along their arc (171..189), or stored -179..-171 then 171..179.
    across = terrain_elevation(lat, np.concatenate([west, east]))
    np.testing.assert_allclose(across.values, expected, rtol=1e-12)
    stored = np.concatenate([east - 360, west])
    wrapped = terrain_elevation(lat, stored)
    np.testing.assert_allclose(wrapped.values, np.roll(expected, 5, axis=1), rtol=1e-12)
    np.testing.assert_array_equal(wrapped["lon"].values, stored)


def test_observed_mask_matches_the_missing_values_written(tmp_path):
    case = wfde5(tmp_path)
    da = open_field(case.path)
    mask = observed_mask(da)
    assert mask.dtype == bool and mask.dims == DIMS
    la, lo = np.meshgrid(da["lat"].values, da["lon"].values, indexing="ij")
    land = ~case.ocean(la, lo)
    assert 0 < land.sum() < land.size
    np.testing.assert_array_equal(mask.values, np.broadcast_to(land, mask.shape))


def field(lat, lon, years=YEARS):
    return xr.DataArray(
        grid_values(years, lat, lon),
        dims=DIMS,
        coords={
            "time": [cftime.DatetimeNoLeap(int(y), 1, 1) for y in years],
            "lat": lat,
            "lon": lon,
        },
    )


def test_several_ensemble_members_are_refused():
    da = field(np.arange(3.0), np.arange(4.0)).expand_dims(number=[0, 1])
    with pytest.raises(ValueError, match=r"2 ensemble members.*isel\(number=0\)"):
        normalise_conventions(da)


def test_expver_versions_are_merged_and_other_dimensions_refused():
    da = field(np.arange(3.0), np.arange(4.0))
    final, preliminary = da.copy(), da.copy()
    final[2:] = np.nan
    preliminary[:2] = np.nan
    merged = normalise_conventions(xr.concat([final, preliminary], "expver"))
    np.testing.assert_array_equal(merged.values, da.values)
    with pytest.raises(ValueError, match="'level': 2"):
        normalise_conventions(da.expand_dims(level=[850, 500]))


def test_scalar_time_becomes_a_time_dimension():
    da = field(np.arange(3.0), np.arange(4.0)).isel(time=1)
    out = normalise_conventions(da)
    assert out.dims == DIMS and out["time"].dt.year.values.tolist() == [YEARS[1]]


def test_select_region_keeps_exactly_the_cells_inside():
    lat, lon = np.arange(-30.0, 31.0, 2.5), np.arange(-180.0, 180.0, 5.0)
    da = field(lat, lon)
    inside_lat = (lat >= -10) & (lat <= 12.5)
    inside_lon = (lon >= -20) & (lon <= 35)
    for spec in (Region("box", (-10.0, 12.5), (-20.0, 35.0)), "-10,12.5,-20,35"):
        out = select_region(da, spec)
        np.testing.assert_array_equal(out["lat"].values, lat[inside_lat])
        np.testing.assert_array_equal(out["lon"].values, lon[inside_lon])
        np.testing.assert_array_equal(out.values, da.values[:, inside_lat][:, :, inside_lon])


def test_select_region_refuses_empty_and_all_missing_selections(tmp_path):
    da = field(np.arange(-30.0, 31.0, 2.5), np.arange(-180.0, 180.0, 5.0))
    with pytest.raises(ValueError, match=r"'europe'.*nothing.*extent is lat \[-30.0, 30.0\]"):
        select_region(da, "europe")
    land = open_field(wfde5(tmp_path).path)
    with pytest.raises(ValueError, match="only missing"):
        select_region(land.compute(), "0,10,-90,-70")
    # A lazy field's values are not read to check them: that would read all of them.
    assert select_region(land, "0,10,-90,-70").chunks is not None


def global_field():
    return field(np.arange(-30.0, 31.0, 2.5), np.arange(-180.0, 180.0, 2.5))


def test_a_region_across_the_antimeridian_is_continuous():
    da = global_field()
    lon = da["lon"].values
    out = select_region(da, "-10,12.5,150,-110")
    assert get_region("-10,12.5,150,-110").crosses_antimeridian
    inside = (lon >= 150) | (lon <= -110)
    # Every cell inside once, west to east over 180°: 150 ... 177.5, 180 (= -180) ... 250.
    np.testing.assert_allclose(out["lon"].values, np.arange(150.0, 250.1, 2.5), rtol=1e-12)
    assert out.sizes["lon"] == inside.sum()
    expected = grid_values(YEARS, out["lat"].values, out["lon"].values)
    np.testing.assert_allclose(out.values, expected, rtol=1e-12)
    # A box reaching 180° from either side.
    assert select_region(da, "0,10,170,-180")["lon"].values[-1] == 180.0
    assert select_region(da, "0,10,-180,-170")["lon"].values[0] == -180.0


def test_normalisation_of_a_region_across_the_antimeridian():
    region = select_region(global_field(), "-10,10,150,-110")
    norm = Normalisation.fit(region)
    assert (norm.lon_origin, norm.coord_scale) == (200.0, 50.0)
    _, x_lon = norm.normalise_coords(region["lat"].values, region["lon"].values)
    np.testing.assert_allclose(x_lon, np.linspace(-1, 1, 41), rtol=1e-12)
    # Any convention of one longitude is one model input: 170°W, 190°E, 550°E.
    _, same = norm.normalise_coords(0.0, np.array([-170.0, 190.0, 550.0]))
    np.testing.assert_allclose(same, [-0.2, -0.2, -0.2], rtol=1e-12)
    # A Pacific-only file stores its cells as -180..-110 and 150..180: the same fit.
    stored = region.assign_coords(lon=(region["lon"].values + 180) % 360 - 180)
    again = Normalisation.fit(stored.sortby("lon"))
    assert (again.lon_origin, again.coord_scale) == (norm.lon_origin, norm.coord_scale)
    assert again.value_mean == pytest.approx(norm.value_mean, rel=1e-12)


def test_ordinary_longitudes_normalise_exactly_as_before():
    norm = Normalisation.fit(training_field())
    near = np.linspace(norm.lon_origin - 179.9, norm.lon_origin + 179.9, 1001)
    assert np.array_equal(
        norm.normalise_input("lon", near), (near - norm.lon_origin) / norm.coord_scale
    )
    for grid in (np.arange(-135.0, -44.0, 1.875), np.arange(-179.9, 180.0, 0.2)):
        assert np.array_equal(unwrap_longitude(grid), grid)


def test_unwrap_longitude_takes_the_shortest_arc():
    np.testing.assert_array_equal(unwrap_longitude([-170.0, 170.0, 175.0]), [190, 170, 175])
    np.testing.assert_array_equal(unwrap_longitude([0.0, 90.0, 350.0]), [0, 90, -10])
    every = np.arange(-180.0, 180.0, 30.0)  # around the globe: kept in [-180, 180)
    np.testing.assert_array_equal(unwrap_longitude(every), every)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((-135.0, -90.0), (-89.0, -45.0), (-135.0, -45.0)),
        ((150.0, -110.0), (-100.0, -90.0), (150.0, -90.0)),
        ((-170.0, -160.0), (160.0, 170.0), (160.0, -160.0)),
        ((0.0, 10.0), (170.0, -170.0), (0.0, -170.0)),
        ((-180.0, 0.0), (10.0, 180.0), (10.0, 0.0)),
        ((-180.0, 0.0), (0.0, 180.0), (-180.0, 180.0)),
    ],
)
def test_covering_region_goes_the_shorter_way_round(a, b, expected):
    box = covering_region("box", Region("a", (0.0, 1.0), a), Region("b", (-1.0, 2.0), b))
    assert box.lon == expected and box.lat == (-1.0, 2.0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("atlantis", "unknown region 'atlantis'; known: europe"),
        ("10,5,0,1", "south < north"),
        ("0,10,20,20", r"west != east \(west > east for a box crossing the antimeridian"),
        ("0,10,180,-180", "west != east"),
        ("0,10,170,200", r"-180 <= west, east <= 180.*got \(170.0, 200.0\)"),
        ("1,2,3", "four numbers"),
        ("a,b,c,d", "four numbers"),
    ],
)
def test_get_region_rejects_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        get_region(spec)


def test_named_regions():
    assert get_region("europe") is REGIONS["europe"]
    assert REGIONS["central_us"].lat == (30.0, 50.0)


def monthly_360_day(years):
    times = [cftime.Datetime360Day(y, m, 1) for y in years for m in range(1, 13)]
    lat, lon = np.arange(2.0), np.arange(3.0)
    return xr.DataArray(
        np.random.default_rng(0).normal(size=(len(times), 2, 3)),
        dims=DIMS,
        coords={"time": times, "lat": lat, "lon": lon},
    )


def test_select_years_in_a_360_day_calendar():
    da = monthly_360_day([1860, 1861, 1862])
    out = select_years(da, (1861, 1862))
    expected = [cftime.Datetime360Day(y, m, 1) for y in (1861, 1862) for m in range(1, 13)]
    assert list(out["time"].values) == expected
    assert select_years(da, None) is da
    with pytest.raises(ValueError, match=r"years 2000-2001.*years 1860-1862"):
        select_years(da, (2000, 2001))
    with pytest.raises(ValueError, match="first <= last"):
        select_years(da, (1862, 1861))


def test_select_years_refuses_all_missing_years():
    da = monthly_360_day([1860, 1861])
    da[12:] = np.nan
    with pytest.raises(ValueError, match="only missing"):
        select_years(da, (1861, 1861))


def test_decimal_years_counts_360_day_months_as_twelfths():
    da = monthly_360_day([1860, 1861])
    expected = [y + (m - 1) / 12 for y in (1860, 1861) for m in range(1, 13)]
    np.testing.assert_allclose(decimal_years(da), expected, rtol=1e-12)


def training_field():
    lat, lon = np.arange(20.0, 41.0, 1.25), np.arange(-100.0, -59.0, 1.875)
    da = field(lat, lon)
    da[:, :3, :5] = np.nan
    return da


def test_normalisation_fits_ignoring_missing_values_with_one_coordinate_scale():
    da = training_field()
    norm = Normalisation.fit(da)
    finite = da.values[~np.isnan(da.values)]
    assert norm.value_mean == pytest.approx(sum(finite.tolist()) / finite.size, rel=1e-12)
    assert norm.value_std == pytest.approx(np.nanstd(da.values), rel=1e-12)
    lat, lon = np.meshgrid(da["lat"].values, da["lon"].values, indexing="ij")
    x_lat, x_lon = norm.normalise_coords(lat, lon)
    assert max(np.abs(x_lat).max(), np.abs(x_lon).max()) == pytest.approx(1.0)
    moved_lat, moved_lon = norm.normalise_coords(lat + 3, lon + 3)
    np.testing.assert_allclose(moved_lat - x_lat, moved_lon - x_lon, rtol=1e-12)
    t = norm.normalise_time(decimal_years(da))
    np.testing.assert_allclose([t.min(), t.max()], [-1.0, 1.0], rtol=1e-12)
    y = norm.normalise_values(da)
    assert float(y.mean()) == pytest.approx(0.0, abs=1e-12)
    assert float(y.std()) == pytest.approx(1.0, rel=1e-12)


def test_normalisation_round_trips_exactly():
    field = training_field()
    rng = np.random.default_rng(0)
    elevation = xr.DataArray(
        rng.gamma(2.0, 300.0, (field.sizes["lat"], field.sizes["lon"])),
        coords={"lat": field["lat"], "lon": field["lon"]},
        dims=("lat", "lon"),
    )
    norm = Normalisation.fit(field, elevation)
    z = norm.normalise_input("elevation", elevation.values)
    np.testing.assert_allclose([z.mean(), z.std()], [0.0, 1.0], atol=1e-12)
    rng = np.random.default_rng(1)
    y, lat, lon, t = (rng.normal(scale=100.0, size=50) for _ in range(4))
    np.testing.assert_allclose(norm.denormalise_values(norm.normalise_values(y)), y, rtol=1e-12)
    back_lat, back_lon = norm.denormalise_coords(*norm.normalise_coords(lat, lon))
    np.testing.assert_allclose(back_lat, lat, rtol=1e-12)
    # Longitude is periodic: it comes back within half a turn of the origin.
    turns = (back_lon - lon) / 360
    np.testing.assert_allclose(turns, np.round(turns), atol=1e-12)
    assert np.all(np.abs(back_lon - norm.lon_origin) <= 180)
    inside = np.abs(lon - norm.lon_origin) < 180
    assert inside.sum() > 20
    np.testing.assert_allclose(back_lon[inside], lon[inside], rtol=1e-12)
    np.testing.assert_allclose(norm.denormalise_time(norm.normalise_time(t)), t, rtol=1e-12)
    difference = norm.normalise_values(y[1:]) - norm.normalise_values(y[:-1])
    np.testing.assert_allclose(norm.denormalise_std(difference), np.diff(y), rtol=1e-10)
    saved = json.loads(json.dumps(norm.to_dict()))
    assert Normalisation.from_dict(saved) == norm
    assert all(type(v) is float for v in saved.values())


def test_normalisation_errors():
    da = training_field()
    with pytest.raises(ValueError, match="fitted without elevation"):
        Normalisation.fit(da).normalise_input("elevation", 100.0)
    with pytest.raises(ValueError, match="unknown input 'depth'"):
        Normalisation.fit(da).normalise_input("depth", 1.0)
    single = Normalisation.fit(da.isel(time=[0]))
    assert single.time_scale is None
    with pytest.raises(ValueError, match="without time"):
        single.normalise_time(2000.0)
    with pytest.raises(ValueError, match="finite values"):
        Normalisation.fit(da.where(False))
    with pytest.raises(ValueError, match="value_std must be positive, got 0"):
        Normalisation(1.0, 0.0, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="must include"):
        Normalisation.from_dict({"value_mean": 1.0})


def test_open_field_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.nc"):
        open_field(tmp_path / "absent.nc")
    (tmp_path / "corrupt.nc").write_bytes(b"\x89HDF\r\n\x1a\n not really a netCDF file")
    with pytest.raises(ValueError, match=r"cannot read .*corrupt.nc"):
        open_field(tmp_path / "corrupt.nc")
    case = new_cds_era5(tmp_path)
    with pytest.raises(ValueError, match=r"no variable 'tas'; available: \['t2m'\]"):
        open_field(case.path, "tas")
    ds = xr.open_dataset(case.path).load()
    (ds.assign(d2m=ds["t2m"] - 5)).to_netcdf(tmp_path / "two.nc")
    with pytest.raises(ValueError, match=r"two.nc: cannot choose.*\['t2m', 'd2m'\]"):
        open_field(tmp_path / "two.nc")
    ds.rename(latitude="row").to_netcdf(tmp_path / "nolat.nc")
    with pytest.raises(ValueError, match=r"nolat.nc: no latitude coordinate.*'row'"):
        open_field(tmp_path / "nolat.nc")
    text = ds.assign(t2m=ds["t2m"].astype(str))
    text.to_netcdf(tmp_path / "text.nc")
    with pytest.raises(InputError, match=r"text.nc: field 't2m' holds values of dtype <U"):
        open_field(tmp_path / "text.nc")


@pytest.mark.parametrize("as_coordinates", [True, False])
def test_a_curvilinear_grid_is_refused_with_what_to_do(tmp_path, as_coordinates):
    y, x = np.meshgrid(np.arange(4.0), np.arange(5.0), indexing="ij")
    ds = xr.Dataset(
        {"tas": (("time", "rlat", "rlon"), np.ones((2, 4, 5)))},
        coords={"time": [0, 1], "lat": (("rlat", "rlon"), 40 + y + 0.1 * x)},
    )
    ds["lon"] = (("rlat", "rlon"), 10 + x - 0.1 * y)
    if as_coordinates:
        ds = ds.set_coords("lon")
    ds.to_netcdf(tmp_path / "rcm.nc")
    message = (
        r"rcm.nc: the grid is curvilinear: latitude 'lat' is 2-D with dims \('rlat', 'rlon'\)"
        r".*regular latitude-longitude grid.*xESMF.*CDO"
    )
    with pytest.raises(InputError, match=message):
        open_field(tmp_path / "rcm.nc")
    with pytest.raises(InputError, match="curvilinear"):
        normalise_conventions(ds.set_coords("lon")["tas"])


def test_a_curvilinear_grid_in_data_variables_is_refused(tmp_path):
    # Ocean models store 2-D positions as data variables, marked only by their attributes.
    y, x = np.meshgrid(np.arange(4.0), np.arange(5.0), indexing="ij")
    ds = xr.Dataset(
        {
            "tos": (("time", "y", "x"), np.ones((2, 4, 5))),
            "nav_lat": (("y", "x"), 40 + y + 0.1 * x, {"units": "degrees_north"}),
            "nav_lon": (("y", "x"), 10 + x - 0.1 * y, {"standard_name": "longitude"}),
        },
        coords={"time": [0, 1]},
    )
    ds.to_netcdf(tmp_path / "ocean.nc")
    message = r"ocean.nc: the grid is curvilinear: latitude 'nav_lat' is 2-D with dims \('y', 'x'\)"
    with pytest.raises(InputError, match=message):
        open_field(tmp_path / "ocean.nc", "tos")


@pytest.fixture(scope="module")
def hadcm3():
    pytest.importorskip("iris_sample_data", reason="the default data needs iris-sample-data")
    return open_field(default_data_path())


def test_default_dataset_opens_with_the_documented_grid(hadcm3):
    assert hadcm3.name == "air_temperature" and hadcm3.shape == (240, 37, 49)
    assert hadcm3["time"].dt.calendar == "360_day"
    years = hadcm3["time"].dt.year.values
    assert (years[0], years[-1]) == (1860, 2099)
    lon, lat = hadcm3["lon"].values, hadcm3["lat"].values
    assert lon.min() == pytest.approx(-135.0) and lon.max() == pytest.approx(-45.0)
    assert lat.min() == pytest.approx(15.0) and lat.max() == pytest.approx(60.0)
    values = hadcm3.values
    assert np.isfinite(values).all() and values.min() > 200 and values.max() < 330
    assert default_data_path("A1B").exists()


def test_default_regions_split_the_columns(hadcm3):
    west = set(select_region(hadcm3, "na_west")["lon"].values.tolist())
    east = set(select_region(hadcm3, "na_east")["lon"].values.tolist())
    assert west and east and not west & east
    assert west | east == set(hadcm3["lon"].values.tolist())
    assert max(west) < min(east)


def test_the_default_split_selects_the_documented_years(hadcm3):
    west, east = select_region(hadcm3, "na_west"), select_region(hadcm3, "na_east")
    years = {"train": (1860, 2039), "val": (2040, 2059), "test": (2060, 2099)}
    sizes = {name: select_years(west, span).sizes for name, span in years.items()}
    assert [sizes[name]["time"] for name in years] == [180, 20, 40]
    ood = select_years(east, years["test"]).sizes
    assert ood["time"] == 40 and sizes["train"]["lat"] == ood["lat"] == 37


def test_removed_split_helpers_say_what_replaces_them():
    with pytest.raises(ImportError, match=r"select_years\(select_region"):
        from aenp.data.climate import select_split  # noqa: F401


def test_default_data_path_errors(monkeypatch):
    with pytest.raises(ValueError, match="E1, A1B"):
        default_data_path("B2")
    monkeypatch.setitem(sys.modules, "iris_sample_data", None)
    with pytest.raises(ImportError, match=r'pip install "aenp\[climate\]"'):
        default_data_path()
