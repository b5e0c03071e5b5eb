"""Prediction from xarray grids and pandas station tables, in physical units."""

import cftime
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import aenp
from aenp.data.climate import Normalisation
from aenp.prediction import load_predictor, predict

NORM = Normalisation(
    value_mean=285.0,
    value_std=8.0,
    coord_scale=20.0,
    lat_origin=40.0,
    lon_origin=-100.0,
    time_origin=2000.0,
    time_scale=10.0,
)
LAT = np.arange(50.0, 29.0, -2.0)  # descending, as many files store it
LON = np.arange(240.0, 280.0, 2.5)  # 0-360


def model2d(key="convcnp_approx"):
    torch.manual_seed(0)
    kwargs = (
        {"channels": 8, "num_layers": 2}
        if "conv" in key
        else {
            "embed_dim": 16,
            "num_heads": 2,
            "num_layers": 1,
            "ff_dim": 16,
            "num_pseudo_tokens": 4,
        }
    )
    model = aenp.build_model(key, 2, 1, domain=[[-1, 1], [-1, 1]], **kwargs).double()
    for p in model.backbone.fixed_inputs.projection.parameters():
        torch.nn.init.normal_(p)  # make the fixed inputs matter
    return model.eval()


def field(times=1, fraction=0.3, seed=0):
    rng = np.random.default_rng(seed)
    values = 280 + 10 * rng.standard_normal((times, len(LAT), len(LON)))
    values[rng.random(values.shape) > fraction] = np.nan
    stamps = [cftime.Datetime360Day(2000 + t, 7, 1) for t in range(times)]
    return xr.DataArray(
        values,
        dims=("time", "latitude", "longitude"),
        coords={"time": stamps, "latitude": LAT, "longitude": LON},
        name="t2m",
    )


def targets():
    return xr.Dataset(coords={"latitude": LAT, "longitude": LON})


def normalised_cells():
    """Model inputs of every target cell ``[lat, lon, 2]``, computed by hand."""
    lat, lon = np.meshgrid(LAT, LON, indexing="ij")
    return np.stack([(lat - 40.0) / 20.0, (lon - 360.0 + 100.0) / 20.0], axis=-1)


def test_point_set_model_predicts_on_the_targets_own_coordinates():
    model, context = model2d("tepttnp_approx"), field()
    out = predict(model, context, targets(), NORM, progress=False)
    assert out["mean"].dims == ("latitude", "longitude")
    np.testing.assert_array_equal(out["latitude"].values, LAT)
    np.testing.assert_array_equal(out["longitude"].values, LON)
    # Independently: normalise by hand, call the model on point sets, undo by hand.
    x = normalised_cells()
    observed = np.isfinite(context.values[0])
    xc = torch.tensor(x[observed])[None]
    yc = torch.tensor((context.values[0][observed] - 285.0) / 8.0)[None, :, None]
    with torch.no_grad():
        pred = model(xc, yc, torch.tensor(x.reshape(-1, 2))[None])
    expected_mean = pred.mean[0, :, 0].numpy().reshape(observed.shape) * 8.0 + 285.0
    expected_std = pred.stddev[0, :, 0].numpy().reshape(observed.shape) * 8.0
    np.testing.assert_allclose(out["mean"].values, expected_mean, rtol=1e-10)
    np.testing.assert_allclose(out["std"].values, expected_std, rtol=1e-10)


def test_convolutional_model_predicts_on_the_target_grid():
    model, context = model2d("convcnp_approx"), field()
    out = predict(model, context, targets(), NORM, progress=False)
    np.testing.assert_array_equal(out["latitude"].values, LAT)
    # Independently: the grid sorted south to north and padded to 12 x 16 cells (a multiple
    # of the U-Net's 4), the context on its cells.
    x = normalised_cells()[::-1]
    values = context.values[0][::-1]
    y = np.zeros((1, 12, 16, 1))
    y[0, :11, :16, 0] = np.nan_to_num((values - 285.0) / 8.0)
    mask = np.zeros((1, 12, 16), dtype=bool)
    mask[0, :11, :16] = np.isfinite(values)
    lat_axis = x[0, 0, 0] + (x[1, 0, 0] - x[0, 0, 0]) * np.arange(12)
    lon_axis = x[0, :, 1]
    batch = aenp.GridBatch(
        torch.tensor(y),
        torch.tensor(mask),
        torch.ones(1, 12, 16, dtype=torch.bool),
        (torch.tensor(lat_axis), torch.tensor(lon_axis)),
    )
    with torch.no_grad():
        pred = model(batch)
    expected = pred.mean[0, :11, :, 0].numpy()[::-1] * 8.0 + 285.0
    np.testing.assert_allclose(out["mean"].values, expected, rtol=1e-10)


@pytest.mark.parametrize("key", ["convcnp_approx", "tepttnp_approx"])
def test_chunked_prediction_equals_unchunked(key):
    model, context = model2d(key), field(times=3)
    whole = predict(model, context, targets(), NORM, progress=False)
    chunked = predict(model, context, targets(), NORM, chunk_size=7, progress=False)
    xr.testing.assert_allclose(whole, chunked, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("key", ["convcnp_approx", "tepttnp_approx"])
def test_stations_and_grid_give_the_same_prediction(key):
    model, context = model2d(key), field()
    frame = context.to_dataframe().reset_index().dropna()
    stations = frame[["latitude", "longitude", "t2m"]]
    from_grid = predict(model, context, targets(), NORM, progress=False)
    from_stations = predict(model, stations, targets(), NORM, progress=False)
    xr.testing.assert_allclose(from_grid, from_stations, rtol=1e-10)
    # DataFrame targets: mean and std columns at the requested rows, in their order.
    rows = pd.DataFrame({"lat": [LAT[3], LAT[0]], "lon": [LON[5], LON[1] - 360.0]})
    if key.startswith("conv"):
        with pytest.raises(ValueError, match="convolutional models predict on a grid"):
            predict(model, stations, rows, NORM, progress=False)
        return
    out = predict(model, stations, rows, NORM, progress=False)
    assert list(out.columns) == ["lat", "lon", "mean", "std"]
    np.testing.assert_allclose(
        out["mean"].values,
        [from_grid["mean"].values[3, 5], from_grid["mean"].values[0, 1]],
        rtol=1e-10,
    )


def test_a_2d_model_predicts_each_time_step_of_the_context():
    model, context = model2d(), field(times=3)
    out = predict(model, context, targets(), NORM, progress=False)
    assert out["mean"].dims == ("time", "latitude", "longitude")
    for t in range(3):
        single = predict(model, context.isel(time=[t]), targets(), NORM, progress=False)
        np.testing.assert_allclose(out["mean"].values[t], single["mean"].values, rtol=1e-10)


def test_a_3d_model_needs_and_uses_target_times():
    model = aenp.build_model("convcnp", 3, 1, channels=4, num_layers=1).double().eval()
    context = field(times=2)
    with pytest.raises(ValueError, match="needs targets with a time coordinate"):
        predict(model, context, targets(), NORM, progress=False)
    grid = targets().assign_coords(time=context["time"].values)
    out = predict(model, context, grid, NORM, progress=False)
    assert out["mean"].dims == ("time", "latitude", "longitude")
    assert bool(np.isfinite(out["std"]).all())


def test_saved_normalisation_is_used_from_the_model_directory(tmp_path):
    model = model2d()
    aenp.save(model, tmp_path / "run" / "model", metadata={"normalisation": NORM.to_dict()})
    _, norm = load_predictor(tmp_path / "run")
    assert norm == NORM
    direct = predict(model, field(), targets(), NORM, progress=False)
    from_path = predict(tmp_path / "run", field(), targets(), progress=False)
    xr.testing.assert_allclose(direct, from_path, rtol=1e-10)
    aenp.save(model, tmp_path / "plain")
    with pytest.raises(ValueError, match="saved without a normalisation"):
        predict(tmp_path / "plain", field(), targets(), progress=False)


def test_bad_input_is_named():
    model = model2d()
    with pytest.raises(ValueError, match="no observed"):
        predict(model, field(fraction=0.0), targets(), NORM, progress=False)
    with pytest.raises(ValueError, match="lat and lon columns"):
        predict(model, pd.DataFrame({"x": [1.0], "value": [2.0]}), targets(), NORM)
    with pytest.raises(ValueError, match="exactly one value column"):
        stations = pd.DataFrame({"lat": [40.0], "lon": [-100.0], "a": [1.0], "b": [2.0]})
        predict(model, stations, targets(), NORM)
    with pytest.raises(ValueError, match="coordinates must be finite"):
        stations = pd.DataFrame({"lat": [np.nan], "lon": [-100.0], "value": [280.0]})
        predict(model, stations, targets(), NORM, progress=False)
    with pytest.raises(ValueError, match="no latitude coordinate"):
        predict(model, field(), xr.Dataset(coords={"x": [1.0]}), NORM)
    with pytest.raises(ValueError, match="3 time steps"):
        predict(model, field(times=3), pd.DataFrame({"lat": [40.0], "lon": [-100.0]}), NORM)
    with pytest.raises(TypeError, match="context must be"):
        predict(model, np.zeros(3), targets(), NORM)
    with pytest.raises(ValueError, match="needs the normalisation"):
        predict(model, field(), targets())


def test_command_line_writes_netcdf_and_csv(tmp_path):
    from aenp.cli import main

    aenp.save(
        model2d("tepttnp_approx"),
        tmp_path / "run" / "model",
        metadata={"normalisation": NORM.to_dict()},
    )
    field().to_dataset().to_netcdf(tmp_path / "context.nc")
    targets().to_netcdf(tmp_path / "targets.nc")
    pd.DataFrame({"lat": [LAT[2]], "lon": [LON[4]]}).to_csv(tmp_path / "rows.csv", index=False)
    args = ["predict", str(tmp_path / "run"), "--context", str(tmp_path / "context.nc")]
    assert (
        main([*args, "--targets", str(tmp_path / "targets.nc"), "--out", str(tmp_path / "p.nc")])
        == 0
    )
    grid = xr.open_dataset(tmp_path / "p.nc")
    expected = predict(tmp_path / "run", field(), targets(), progress=False)
    xr.testing.assert_allclose(grid.load(), expected, rtol=1e-10)
    assert (
        main([*args, "--targets", str(tmp_path / "rows.csv"), "--out", str(tmp_path / "p.csv")])
        == 0
    )
    rows = pd.read_csv(tmp_path / "p.csv")
    assert rows["mean"].iloc[0] == pytest.approx(float(expected["mean"].values[2, 4]), rel=1e-10)
    # A grid cannot go to a CSV file; nothing is written.
    assert (
        main([*args, "--targets", str(tmp_path / "targets.nc"), "--out", str(tmp_path / "g.csv")])
        == 2
    )
    assert not (tmp_path / "g.csv").exists()


NORM4 = Normalisation(**{**NORM.to_dict(), "elevation_origin": 500.0, "elevation_scale": 250.0})


def elevation_field():
    """Elevation rising linearly to the north-east, on a coarser grid than the targets (so
    bilinear interpolation is exact)."""
    lat, lon = np.arange(25.0, 56.0, 5.0), np.arange(-125.0, -74.0, 5.0)
    values = 20.0 * (lat[:, None] - 25.0) + 10.0 * (lon[None, :] + 125.0)
    return xr.DataArray(values, coords={"lat": lat, "lon": lon}, dims=("lat", "lon"))


def model4d(key):
    torch.manual_seed(0)
    domain = [[None, None], [-1, 1], [-1, 1], [None, None]]
    kwargs = (
        {"channels": 8, "num_layers": 2, "channel_inputs": 1}
        if "conv" in key
        else {"embed_dim": 16, "num_heads": 2, "num_layers": 1, "ff_dim": 16}
    )
    return aenp.build_model(key, 4, 1, domain=domain, **kwargs).double().eval()


@pytest.mark.parametrize("key", ["convcnp_approx", "tepttnp_approx"])
def test_a_4d_model_uses_the_elevation_of_every_point(key):
    model, context = model4d(key), field(times=2)
    grid = targets().assign_coords(time=context["time"].values)
    with pytest.raises(ValueError, match="needs the elevation of every point"):
        predict(model, context, grid, NORM4, progress=False)
    out = predict(model, context, grid, NORM4, progress=False, elevation=elevation_field())
    assert out["mean"].dims == ("time", "latitude", "longitude")
    chunked = predict(
        model, context, grid, NORM4, chunk_size=5, progress=False, elevation=elevation_field()
    )
    xr.testing.assert_allclose(out, chunked, rtol=1e-10, atol=1e-10)
    steeper = predict(model, context, grid, NORM4, progress=False, elevation=2 * elevation_field())
    assert not np.allclose(out["mean"].values, steeper["mean"].values)
    # Raising every point alike is a translation along elevation: the TE-PT-TNP is equivariant
    # to it, while the ConvCNP reads elevation as a data channel.
    raised = predict(model, context, grid, NORM4, progress=False, elevation=elevation_field() + 500)
    unchanged = np.allclose(out["mean"].values, raised["mean"].values, rtol=1e-10)
    assert unchanged == (key == "tepttnp_approx")


def test_a_4d_model_sees_the_interpolated_elevation_as_its_fourth_input():
    model, context = model4d("tepttnp_approx"), field(times=1)
    stations = pd.DataFrame(
        {
            "time": [cftime.Datetime360Day(2000, 7, 1)] * 2,
            "lat": [41.0, 33.5],
            "lon": [-95.0, -110.0],
        }
    )
    expected = 20.0 * (stations["lat"] - 25.0) + 10.0 * (stations["lon"] + 125.0)
    field_only = elevation_field()
    out = predict(model, context, stations, NORM4, progress=False, elevation=field_only)
    # Stations whose elevation column holds the exact values predict alike; the column wins
    # over the field.
    own = stations.assign(elevation=expected)
    same = predict(model, context, own, NORM4, progress=False, elevation=field_only)
    np.testing.assert_allclose(out["mean"], same["mean"], rtol=1e-10)
    higher = own.assign(elevation=expected + 300.0)
    moved = predict(model, context, higher, NORM4, progress=False, elevation=field_only)
    assert not np.allclose(out["mean"], moved["mean"], rtol=1e-6)


def test_terrain_elevation_serves_grids_and_stations():
    pytest.importorskip("pvlib", reason='the terrain map needs "aenp[climate]"')
    model, context = model4d("tepttnp_approx"), field(times=1)
    grid = targets().assign_coords(time=context["time"].values)
    out = predict(model, context, grid, NORM4, progress=False, elevation="terrain")
    assert bool(np.isfinite(out["mean"]).all())
    stations = pd.DataFrame({"time": context["time"].values[:1], "lat": [39.74], "lon": [-104.99]})
    point = predict(model, context, stations, NORM4, progress=False, elevation="terrain")
    from pvlib.location import lookup_altitude

    denver = lookup_altitude(39.74, -104.99)
    given = predict(
        model,
        context,
        stations.assign(elevation=denver),
        NORM4,
        progress=False,
        elevation="terrain",
    )
    # Bilinear interpolation between the map's 1/12° cells stays near the cell's own value.
    assert point["mean"].item() == pytest.approx(given["mean"].item(), abs=0.5)
    with pytest.raises(ValueError, match="elevation must be a DataArray, 'terrain' or None"):
        predict(model, context, grid, NORM4, progress=False, elevation="srtm")
