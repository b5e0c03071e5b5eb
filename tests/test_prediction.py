"""Prediction from xarray grids and pandas station tables, in physical units."""

import re
import warnings
from pathlib import Path

import cftime
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import aenp
from aenp import prediction
from aenp.data.climate import Normalisation, wrap_longitude
from aenp.errors import InputError, MissingFileError
from aenp.prediction import ExtrapolationWarning, load_predictor, predict, predict_files

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
    # The std is scaled back to kelvin (by value_std), not shifted.
    expected_std = pred.stddev[0, :11, :, 0].numpy()[::-1] * 8.0
    np.testing.assert_allclose(out["std"].values, expected_std, rtol=1e-10)


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


def test_a_2d_model_names_the_time_steps_as_the_targets_do():
    # ERA5 calls time "valid_time"; predicting on the context's own grid keeps that name.
    model, context = model2d(), field(times=2)
    era5 = context.rename(time="valid_time")
    out = predict(model, era5, era5, NORM, progress=False)
    assert out["mean"].dims == ("valid_time", "latitude", "longitude")
    np.testing.assert_array_equal(out["valid_time"].values, context["time"].values)
    expected = predict(model, context, targets(), NORM, progress=False)
    xr.testing.assert_allclose(out.rename(valid_time="time"), expected, rtol=1e-10)


def test_a_dataset_context_is_read_as_its_one_variable():
    model = model2d()
    from_array = predict(model, field(), targets(), NORM, progress=False)
    from_dataset = predict(model, field().to_dataset(), targets(), NORM, progress=False)
    xr.testing.assert_identical(from_dataset, from_array)
    two = field().to_dataset().assign(d2m=field(seed=1))
    with pytest.raises(
        InputError, match=re.escape("a Dataset must hold one data variable, got ['t2m', 'd2m']")
    ):
        predict(model, two, targets(), NORM, progress=False)


@pytest.mark.parametrize("key", ["convcnp_approx", "tepttnp_approx"])
def test_a_float32_model_predicts_as_its_float64_self(key):
    model = model2d(key)
    expected = predict(model, field(), targets(), NORM, progress=False)
    out = predict(model.float(), field(), targets(), NORM, progress=False)
    xr.testing.assert_allclose(out, expected, rtol=1e-5)


@pytest.mark.parametrize("key", ["convcnp_approx", "tepttnp_approx"])
def test_the_progress_bar_is_shown_only_when_asked(key, capsys):
    model = model2d(key)
    predict(model, field(), targets(), NORM, progress=False)
    assert "predict" not in capsys.readouterr().err
    predict(model, field(), targets(), NORM)
    assert "predict" in capsys.readouterr().err


def test_a_3d_model_needs_and_uses_target_times():
    model = aenp.build_model("convcnp", 3, 1, channels=4, num_layers=1).double().eval()
    context = field(times=2)
    with pytest.raises(ValueError, match="needs targets with a time coordinate"):
        predict(model, context, targets(), NORM, progress=False)
    times = context["time"].values
    out = predict(model, context, targets().assign_coords(time=times), NORM, progress=False)
    assert out["mean"].dims == ("time", "latitude", "longitude")
    assert not np.allclose(out["mean"][0], out["mean"][1])
    # Each year's context lands on its own year's targets, whatever their order.
    flipped = targets().assign_coords(time=times[::-1])
    flipped = predict(model, context, flipped, NORM, progress=False)
    xr.testing.assert_allclose(flipped.sel(time=times), out, rtol=1e-10)
    # A point-set model at one place: moving the target time moves the prediction (a model
    # that ignored time would predict the same at all three rows).
    tnp = aenp.build_model("tnp", 3, 1, embed_dim=8, num_heads=2, num_layers=1, ff_dim=8)
    years = [cftime.Datetime360Day(y, 7, 1) for y in (2000, 2000, 2005)]
    rows = pd.DataFrame({"lat": [40.0] * 3, "lon": [-100.0] * 3, "time": years})
    mean = predict(tnp.double().eval(), context, rows, NORM, progress=False)["mean"].to_numpy()
    assert mean[0] == mean[1] != mean[2]


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
    with pytest.raises(ValueError, match=r"runs the model on the CPU, and this one is on meta"):
        predict(model2d().to("meta"), field(), targets(), NORM)


def test_convolutional_models_refuse_an_unevenly_spaced_target_grid():
    uneven = xr.Dataset(coords={"latitude": [30.0, 32.0, 35.0, 37.0, 40.0], "longitude": LON})
    with pytest.raises(
        InputError, match="convolutional models need an evenly spaced target grid; lat is not"
    ):
        predict(model2d(), field(), uneven, NORM, progress=False)


def test_command_line_writes_netcdf_and_csv(tmp_path, run):
    from aenp.cli import main

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


def test_non_finite_elevation_is_named():
    model = model4d("tepttnp_approx")
    stations = stations_at(40.0, -100.0).drop(columns="t2m").assign(elevation=np.inf)
    message = "coordinates must be finite (NaN or infinite latitude, longitude, time or elevation)"
    with pytest.raises(InputError, match=re.escape(message)):
        predict(model, field(), stations, NORM4, progress=False, elevation=elevation_field())


def terrain_by_hand(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """The terrain map read directly, interpolated bilinearly between its 1/12° points."""
    import h5py
    import pvlib

    with h5py.File(Path(pvlib.__file__).parent / "data" / "Altitude.h5", "r") as file:
        codes = file["Altitude"][:]
    metres = np.where(codes == 255, 0.0, codes * 28.0 - 450.0)  # 255 is ocean
    # Fractional row (from 90°N southwards) and column (from 180°W eastwards) of each point.
    row, col = (90.0 - lat) * 12 - 0.5, (lon + 180.0) * 12 - 0.5
    r, c = np.floor(row).astype(int), np.floor(col).astype(int)
    a, b = row - r, col - c
    return (
        (1 - a) * (1 - b) * metres[r, c]
        + (1 - a) * b * metres[r, c + 1]
        + a * (1 - b) * metres[r + 1, c]
        + a * b * metres[r + 1, c + 1]
    )


def test_terrain_elevation_serves_grids_and_stations():
    pytest.importorskip("pvlib", reason='the terrain map needs "aenp[climate]"')
    model, context = model4d("tepttnp_approx"), field(times=1)
    grid = targets().assign_coords(time=context["time"].values)
    out = predict(model, context, grid, NORM4, progress=False, elevation="terrain")
    assert bool(np.isfinite(out["mean"]).all())
    # Denver and Boulder, in the Rockies' foothills, where the terrain changes cell to cell.
    stations = pd.DataFrame(
        {"time": context["time"].values[[0, 0]], "lat": [39.74, 40.015], "lon": [-104.99, -105.27]}
    )
    terrain = predict(model, context, stations, NORM4, progress=False, elevation="terrain")
    metres = terrain_by_hand(stations["lat"].to_numpy(), stations["lon"].to_numpy())
    assert 1500.0 < min(metres) < max(metres) < 2200.0
    # The context's elevation still comes from the map; the stations' column wins over it.
    given = stations.assign(elevation=metres)
    given = predict(model, context, given, NORM4, progress=False, elevation="terrain")
    np.testing.assert_allclose(terrain["mean"], given["mean"], rtol=1e-10)
    with pytest.raises(ValueError, match="elevation must be a DataArray, 'terrain' or None"):
        predict(model, context, grid, NORM4, progress=False, elevation="srtm")


# Files: atomic writes, clear errors.


@pytest.fixture
def run(tmp_path):
    """A saved point-set model with its normalisation, and a context grid file."""
    aenp.save(
        model2d("tepttnp_approx"),
        tmp_path / "run" / "model",
        metadata={"normalisation": NORM.to_dict()},
    )
    field().to_dataset().to_netcdf(tmp_path / "context.nc")
    targets().to_netcdf(tmp_path / "targets.nc")
    pd.DataFrame({"lat": [LAT[2]], "lon": [LON[4]]}).to_csv(tmp_path / "rows.csv", index=False)
    return tmp_path / "run"


def predict_to(run, out, targets_file="targets.nc"):
    """Runs predict_files from the run's context file to ``out``."""
    return predict_files(
        run, run.parent / "context.nc", run.parent / targets_file, out, chunk_size=64
    )


def test_out_is_checked_before_predicting(run, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("predicted before checking --out")

    monkeypatch.setattr(prediction.io, "predict", fail)
    with pytest.raises(MissingFileError, match=r"folder .*absent.* does not exist"):
        predict_to(run, run.parent / "absent" / "p.nc")
    with pytest.raises(InputError, match=r"prediction will be a grid: use \.nc or \.zarr"):
        predict_to(run, run.parent / "p.csv")
    with pytest.raises(InputError, match=r"prediction will be a table \(CSV targets\)"):
        predict_to(run, run.parent / "p.nc", "rows.csv")
    with pytest.raises(InputError, match=r"--out must end in \.nc, \.zarr, \.csv"):
        predict_to(run, run.parent / "p.txt")


@pytest.mark.parametrize("name", ["p.nc", "p.zarr", "p.csv"])
def test_an_existing_folder_at_out_is_refused_and_kept(run, name):
    folder = run.parent / name
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    targets_file = "rows.csv" if name.endswith(".csv") else "targets.nc"
    with pytest.raises(InputError, match="is an existing folder; aenp does not delete folders"):
        predict_to(run, folder, targets_file)
    assert (folder / "notes.txt").read_text() == "mine"


def test_stale_partial_outputs_of_a_killed_run_do_not_block_the_next(run):
    # What a killed run leaves: the name older versions used, and one of atomic_write's.
    stale = [run.parent / ".p.zarr.partial", run.parent / ".p.zarr.0123456789ab.partial.zarr"]
    for folder in stale:
        folder.mkdir()
        (folder / "zarr.json").write_text("{")
    predict_to(run, run.parent / "p.zarr")
    assert all((folder / "zarr.json").read_text() == "{" for folder in stale)  # not ours
    expected = predict(run, field(), targets(), progress=False)
    xr.testing.assert_allclose(xr.open_zarr(run.parent / "p.zarr").load(), expected, rtol=1e-6)


WRITERS = {".nc": (xr.Dataset, "to_netcdf"), ".zarr": (xr.Dataset, "to_zarr")}
WRITERS[".csv"] = (pd.DataFrame, "to_csv")


@pytest.mark.parametrize("suffix", list(WRITERS))
def test_a_writer_failing_part_way_keeps_the_previous_output(run, monkeypatch, suffix):
    out = run.parent / f"p{suffix}"
    targets_file = "rows.csv" if suffix == ".csv" else "targets.nc"
    if suffix != ".zarr":  # an existing zarr store is a folder: refused, never replaced
        out.write_text("previous")
    cls, method = WRITERS[suffix]

    def write_then_fail(self, path, *args, **kwargs):
        if suffix == ".zarr":
            Path(path).mkdir()
            (Path(path) / "zarr.json").write_text("{")
        else:
            Path(path).write_text("half")
        raise OSError("disk full")

    monkeypatch.setattr(cls, method, write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        predict_to(run, out, targets_file)
    assert sorted(p.name for p in run.parent.iterdir() if p.name.startswith(".")) == []
    if suffix == ".zarr":
        assert not out.exists()
    else:
        assert out.read_text() == "previous"
    monkeypatch.undo()
    predict_to(run, out, targets_file)
    if suffix == ".csv":
        assert list(pd.read_csv(out).columns) == ["lat", "lon", "mean", "std"]
    else:
        opened = xr.open_zarr(out) if suffix == ".zarr" else xr.open_dataset(out)
        assert opened["mean"].shape == (len(LAT), len(LON))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty; expected a CSV table"),
        ("lat,lon,t2m\n", "the table has no rows"),
        (
            "lat,lon,t2m\n40,-100,281.5\n41,-100,warm\n",
            "column 't2m' must hold numbers, got 'warm' in row 2 of 2",
        ),
        ("lat,lon,t2m\n40,-100,281.5\nN41,-100,280\n", "column 'lat' must hold numbers, got 'N41'"),
        ("time,lat,lon,t2m\nJuly,40,-100,281.5\n", "column 'time' must hold dates"),
    ],
)
def test_bad_csv_context_names_the_file_and_column(run, capsys, text, message):
    from aenp.cli import main

    (run.parent / "obs.csv").write_text(text)
    argv = ["predict", str(run), "--context", str(run.parent / "obs.csv")]
    argv += ["--targets", str(run.parent / "targets.nc"), "--out", str(run.parent / "p.nc")]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert str(run.parent / "obs.csv") in error and message in error
    assert not (run.parent / "p.nc").exists()


def test_csv_context_dates_become_the_time_steps(run):
    obs = pd.DataFrame(
        {
            "time": ["2001-07-01", "2001-07-01", "2002-07-01"],
            "lat": [40.0, 44.0, 40.0],
            "lon": [-100.0, -95.0, -100.0],
            "t2m": [281.5, 279.0, 283.0],
        }
    )
    obs.to_csv(run.parent / "obs.csv", index=False)
    predict_files(run, run.parent / "obs.csv", run.parent / "targets.nc", run.parent / "p.nc")
    out = xr.open_dataset(run.parent / "p.nc").load()
    dates = np.array(["2001-07-01", "2002-07-01"], dtype="datetime64[ns]")
    np.testing.assert_array_equal(out["time"].values, dates)
    expected = predict(run, obs.assign(time=pd.to_datetime(obs["time"])), targets(), progress=False)
    xr.testing.assert_allclose(out, expected, rtol=1e-10)


def test_targets_from_a_zarr_store_or_an_unreadable_folder(run):
    targets().to_zarr(run.parent / "targets.zarr")
    out = run.parent / "p.nc"
    predict_files(run, run.parent / "context.nc", run.parent / "targets.zarr", out)
    expected = predict(run, field(), targets(), progress=False)
    xr.testing.assert_allclose(xr.open_dataset(out).load(), expected, rtol=1e-10)
    (run.parent / "empty").mkdir()
    with pytest.raises(InputError, match=r"cannot read .*empty as netCDF or zarr"):
        predict_files(run, run.parent / "context.nc", run.parent / "empty", run.parent / "q.nc")


def test_variable_names_the_context_field_of_a_file(run):
    dew = field(seed=1) - 5.0
    field().to_dataset().assign(d2m=dew).to_netcdf(run.parent / "both.nc")
    out = run.parent / "p.nc"
    with pytest.raises(InputError, match="pass variable= to name one"):
        predict_files(run, run.parent / "both.nc", run.parent / "targets.nc", out)
    predict_files(run, run.parent / "both.nc", run.parent / "targets.nc", out, variable="d2m")
    expected = predict(run, dew, targets(), progress=False)
    xr.testing.assert_allclose(xr.open_dataset(out).load(), expected, rtol=1e-10)


def test_non_numeric_dataframe_values_are_named():
    model = model2d("tepttnp_approx")
    stations = pd.DataFrame({"lat": [40.0], "lon": [-100.0], "t2m": ["281 K"]})
    with pytest.raises(InputError, match="context: column 't2m' must hold numbers, got '281 K'"):
        predict(model, stations, targets(), NORM, progress=False)
    rows = pd.DataFrame({"lat": ["forty"], "lon": [-100.0]})
    with pytest.raises(InputError, match="targets: column 'lat' must hold numbers"):
        predict(model, stations.assign(t2m=281.0), rows, NORM, progress=False)
    with pytest.raises(InputError, match="targets: the table has no rows"):
        predict(model, stations.assign(t2m=281.0), rows.iloc[:0], NORM, progress=False)


# Cell size, context off the grid, extrapolation.

REGION = {"south": 30.0, "north": 50.0, "west": -120.0, "east": -82.5}
"""The grid of :data:`LAT` and :data:`LON` as a recorded training region."""
NORM_GRID = Normalisation(**{**NORM.to_dict(), **REGION, "lat_step": 2.0, "lon_step": 2.5})


def test_normalisation_records_the_training_region_and_cells():
    da = field().isel(latitude=slice(None, None, -1)).rename(latitude="lat", longitude="lon")
    da = da.assign_coords(lon=da["lon"] - 360.0)  # sorted and wrapped, as by open_field
    norm = Normalisation.fit(da)
    assert (norm.south, norm.north, norm.west, norm.east) == (30.0, 50.0, -120.0, -82.5)
    assert (norm.lat_step, norm.lon_step) == (2.0, 2.5)
    assert Normalisation.from_dict(norm.to_dict()) == norm
    # Runs saved before these were recorded still load.
    assert Normalisation.from_dict(NORM.to_dict()).lat_step is None
    # A region across the antimeridian: columns from 170°E on, one step of 2.5° each.
    pacific = da.assign_coords(lon=wrap_longitude(170.0 + 2.5 * np.arange(len(LON))))
    norm = Normalisation.fit(pacific)
    assert (norm.west, norm.east, norm.lon_step) == (170.0, 207.5, 2.5)


def test_target_cells_must_have_the_training_cell_size():
    model, context = model2d(), field()
    # Descending latitudes, 0-360 longitudes and float32 coordinates are the same cells.
    same = predict(model, context, targets(), NORM_GRID, progress=False)
    float32 = targets().assign_coords(
        latitude=LAT.astype(np.float32), longitude=LON.astype(np.float32)
    )
    xr.testing.assert_allclose(
        same, predict(model, context, float32, NORM_GRID, progress=False), rtol=1e-5
    )
    fine = xr.Dataset(coords={"latitude": np.arange(30.0, 50.5, 1.0), "longitude": LON})
    with pytest.raises(InputError, match=r"latitude spacing is 1°, the training cells' 2°"):
        predict(model, context, fine, NORM_GRID, progress=False)
    coarse = xr.Dataset(coords={"latitude": LAT, "longitude": LON[::2]})
    with pytest.raises(InputError, match=r"longitude spacing is 5°, the training cells' 2.5°"):
        predict(model, context, coarse, NORM_GRID, progress=False)
    # Older runs recorded no cell size: nothing to check.
    predict(model, context, fine, NORM, progress=False)


def test_context_off_the_target_grid_is_left_out_with_a_warning():
    model, context = model2d(), field()
    stations = context.to_dataframe().reset_index().dropna()[["latitude", "longitude", "t2m"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        on_grid = predict(model, stations, targets(), NORM, progress=False)
    far = pd.DataFrame({"latitude": [LAT[0] + 5.0, LAT[-1] - 1.5], "longitude": [LON[0]] * 2})
    with pytest.warns(UserWarning, match=f"2 of {len(stations) + 2} context points lie more"):
        out = predict(
            model, pd.concat([stations, far.assign(t2m=300.0)]), targets(), NORM, progress=False
        )
    xr.testing.assert_allclose(out, on_grid, rtol=1e-10)


@pytest.mark.parametrize("key", ["convcnp_approx", "tepttnp_approx"])
def test_warnings_point_at_the_caller_of_predict(key):
    # Far north of the region NORM maps to [-1, 1] (20-60°N), and of the target grid.
    model = model2d(key)
    context = pd.concat([stations_at(40.0, -100.0), stations_at(75.0, -100.0)])
    with pytest.warns(UserWarning) as record:
        predict(model, context, targets(), NORM, progress=False)
    expected = (
        {ExtrapolationWarning, UserWarning} if key.startswith("conv") else {ExtrapolationWarning}
    )
    assert {w.category for w in record} == expected
    assert all(w.filename == __file__ for w in record)


def test_context_points_left_out_are_counted_over_every_time_step():
    model, context = model2d(), field()
    stations = context.to_dataframe().reset_index().dropna()[["latitude", "longitude", "t2m"]]
    far = pd.DataFrame({"latitude": [LAT[0] + 5.0], "longitude": [LON[0]], "t2m": [300.0]})
    steps = [
        pd.concat([stations, far]).assign(time=cftime.Datetime360Day(year, 7, 1))
        for year in (2000, 2001)
    ]
    with pytest.warns(UserWarning, match=f"2 of {2 * len(stations) + 2} context points lie more"):
        predict(model, pd.concat(steps), targets(), NORM, progress=False)


def stations_at(lat, lon, year=2000):
    return pd.DataFrame(
        {"time": [cftime.Datetime360Day(year, 7, 1)], "lat": [lat], "lon": [lon], "t2m": [281.0]}
    )


def test_predicting_far_outside_the_training_region_or_years_warns():
    model = model2d("tepttnp_approx")
    inside = stations_at(40.0, 260.0)  # 0-360 longitude, inside the region
    rows = pd.DataFrame({"lat": [LAT[0], LAT[-1]], "lon": [LON[0], LON[-1]]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict(model, inside, rows, NORM_GRID, progress=False)
        # Within the margin (a tenth of the 20° unit) is not far.
        predict(model, inside, rows.assign(lat=[51.5, 30.0]), NORM_GRID, progress=False)
    east = rows.assign(lon=[-60.0, -100.0])
    with pytest.warns(
        ExtrapolationWarning, match=r"up to 22.5° beyond the training longitudes -120 to -82.5"
    ):
        predict(model, inside, east, NORM_GRID, progress=False)
    south = rows.assign(lat=[10.0, 40.0])
    with pytest.warns(
        ExtrapolationWarning, match=r"up to 20° beyond the training latitudes 30 to 50"
    ):
        predict(model, inside, south, NORM_GRID, progress=False)
    with pytest.warns(
        ExtrapolationWarning, match=r"up to 40.5 years beyond the training years 1990 to 2010"
    ):
        predict(model, stations_at(40.0, -100.0, 2050), rows, NORM_GRID, progress=False)
    # Without a recorded region, the box the normalisation maps to [-1, 1]² (20-60°N here).
    with pytest.warns(
        ExtrapolationWarning, match=r"up to 10° beyond the training latitudes 20 to 60"
    ):
        predict(model, inside, rows.assign(lat=[70.0, 40.0]), NORM, progress=False)


def test_points_inside_a_small_training_region_are_not_extrapolation():
    # A region of 10° square, with a margin of half a degree (a tenth of its 5° unit).
    region = {"south": 35.0, "north": 45.0, "west": -105.0, "east": -95.0}
    small = Normalisation(**{**NORM.to_dict(), "coord_scale": 5.0, **region})
    model, context = model2d("tepttnp_approx"), stations_at(40.0, -100.0)
    corners = pd.DataFrame({"lat": [35.0, 45.0], "lon": [-105.0, -95.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict(model, context, corners, small, progress=False)
    with pytest.warns(
        ExtrapolationWarning, match=r"up to 0.75° beyond the training longitudes -105 to -95"
    ):
        predict(model, context, corners.assign(lon=[-94.25, -100.0]), small, progress=False)


@pytest.mark.parametrize("east", [200.0, -160.0])
def test_a_training_region_across_the_antimeridian_is_not_extrapolation(east):
    model = model2d("tepttnp_approx")
    region = {"south": 30.0, "north": 50.0, "west": 160.0, "east": east}
    pacific = Normalisation(**{**NORM.to_dict(), "lon_origin": 180.0, **region})
    context = stations_at(40.0, 175.0)
    rows = pd.DataFrame({"lat": [40.0, 40.0], "lon": [-165.0, 200.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict(model, context, rows, pacific, progress=False)
    with pytest.warns(
        ExtrapolationWarning, match=r"up to 10° beyond the training longitudes 160 to "
    ):
        predict(model, context, rows.assign(lon=[150.0, 180.0]), pacific, progress=False)
    with pytest.warns(
        ExtrapolationWarning, match=r"up to 10° beyond the training longitudes 160 to "
    ):
        predict(model, context, rows.assign(lon=[-150.0, 180.0]), pacific, progress=False)
