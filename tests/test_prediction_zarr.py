"""Predictions written to zarr block by block: equal to the prediction in memory, resumable."""

import re

import cftime
import dask.array
import numpy as np
import pytest
import torch
import xarray as xr
import zarr

import aenp
from aenp.errors import InputError
from aenp.prediction import predict, predict_to_zarr
from aenp.prediction.gridded import model_grid, receptive_halo
from aenp.prediction.reader import FieldContext
from tests.test_prediction import NORM4 as NORM

LAT = np.arange(59.0, 29.0, -1.0)  # 30 cells, descending as many files store them
LON = np.arange(240.0, 280.0, 1.0)  # 40 cells, 0-360
BLOCKS = {"block_time": 16, "block_side": 12}
"""Blocks smaller than the grid along every axis, the last ones cut short (24 = 16 + 8 time
steps, 30 = 12 + 12 + 6 latitudes, 40 = 3 × 12 + 4 longitudes)."""
TOLERANCE = {"rtol": 1e-10, "atol": 1e-10}


def times(n):
    """Monthly steps of a 360-day calendar (evenly spaced in years)."""
    return [cftime.Datetime360Day(2000 + t // 12, t % 12 + 1, 1) for t in range(n)]


def field(num_times=24, lat=LAT, lon=LON, fraction=0.3, seed=0):
    """Temperature (K) observed at a random ``fraction`` of the cells, NaN elsewhere."""
    rng = np.random.default_rng(seed)
    values = 285 + 8 * rng.standard_normal((num_times, len(lat), len(lon)))
    values[rng.random(values.shape) > fraction] = np.nan
    return xr.DataArray(
        values,
        dims=("time", "latitude", "longitude"),
        coords={"time": times(num_times), "latitude": lat, "longitude": lon},
        name="t2m",
    )


def grid(num_times=None):
    """The target grid, with time steps for 3-D and 4-D models."""
    coords = {"latitude": LAT, "longitude": LON}
    if num_times is not None:
        coords = {"time": times(num_times), **coords}
    return xr.Dataset(coords=coords)


def elevation():
    """Elevation rising to the north-east, coarser than the grid."""
    lat, lon = np.arange(25.0, 66.0, 5.0), np.arange(-125.0, -74.0, 5.0)
    values = 20.0 * (lat[:, None] - 25.0) + 10.0 * (lon[None, :] + 125.0)
    return xr.DataArray(values, coords={"lat": lat, "lon": lon}, dims=("lat", "lon"))


DOMAINS = {
    2: [[-1, 1], [-1, 1]],
    3: [[None, None], [-1, 1], [-1, 1]],
    4: [[None, None], [-1, 1], [-1, 1], [None, None]],
}
"""Fixed inputs vary with latitude and longitude only."""


def model(key, dim_x=2, **hparams):
    """A tiny model in float64 whose fixed inputs matter (they vary with absolute position)."""
    torch.manual_seed(0)
    if "cnp" in key:  # the convolutional CNPs
        kwargs = {"channels": 4, "num_layers": 2, "kernel_size": 3}
        if dim_x == 4:
            kwargs["channel_inputs"] = 1  # elevation
    else:
        kwargs = {"embed_dim": 16, "num_heads": 2, "num_layers": 1, "ff_dim": 16}
        kwargs["num_pseudo_tokens"] = 4
    built = aenp.build_model(key, dim_x, 1, domain=DOMAINS[dim_x], **{**kwargs, **hparams})
    for p in built.backbone.fixed_inputs.projection.parameters():
        torch.nn.init.normal_(p)
    return built.double().eval()


def stream(tmp_path, *args, name="p.zarr", **kwargs):
    """predict_to_zarr to a store in tmp_path, opened and loaded."""
    out = predict_to_zarr(*args, tmp_path / name, NORM, progress=False, **kwargs)
    return xr.open_zarr(out).load()


def test_the_halo_is_the_reach_of_a_residual_stack():
    # A stack of residual convolutions: each layer reaches kernel_size // 2 cells further.
    for num_layers, kernel_size in [(1, 3), (3, 3), (2, 5)]:
        conv = aenp.build_model(
            "convcnp", 2, 1, cnn="conv", channels=2, num_layers=num_layers, kernel_size=kernel_size
        )
        halo = receptive_halo(conv, model_grid(grid(), conv, NORM))
        assert halo == (num_layers * (kernel_size // 2),) * 2


def test_convolutional_blocks_equal_the_whole_grid_in_memory(tmp_path):
    convcnp, context = model("convcnp_approx"), field()
    # The windows around blocks are smaller than the grid, so the halo matters.
    halo = receptive_halo(convcnp, model_grid(grid(), convcnp, NORM))
    assert BLOCKS["block_side"] + 2 * max(halo) < len(LAT)
    expected = predict(convcnp, context, grid(), NORM, progress=False)
    xr.testing.assert_allclose(
        stream(tmp_path, convcnp, context, grid(), **BLOCKS), expected, **TOLERANCE
    )


@pytest.mark.parametrize("key", ["equivcnp_approx", "relaxed_convcnp"])
def test_every_convolutional_backbone_is_predicted_in_windows(tmp_path, key):
    # Group convolutions pooled and upsampled by whole blocks; relaxed convolutions whose
    # weights vary with absolute position.
    other, context = model(key, channels=2), field(num_times=2)
    expected = predict(other, context, grid(), NORM, progress=False)
    out = stream(tmp_path, other, context, grid(), block_time=2, block_side=12)
    xr.testing.assert_allclose(out, expected, **TOLERANCE)


def test_point_set_blocks_equal_the_prediction_in_memory(tmp_path):
    tnp, context = model("tepttnp_approx"), field(num_times=4)
    expected = predict(tnp, context, grid(), NORM, progress=False)
    out = stream(tmp_path, tnp, context, grid(), block_time=2, block_side=12)
    xr.testing.assert_allclose(out, expected, **TOLERANCE)


def test_a_3d_model_is_predicted_in_windows_across_time_and_space(tmp_path):
    # A U-Net of one level (a multiple of 2 cells), whose windows lie inside 16 cells.
    convcnp = model("convcnp_approx", dim_x=3, num_layers=1)
    targets = grid(16).isel(latitude=slice(0, 16), longitude=slice(0, 16))
    context = field(num_times=16).isel(latitude=slice(0, 16), longitude=slice(0, 16))
    halo = receptive_halo(convcnp, model_grid(targets, convcnp, NORM))
    assert 6 + max(halo) < 16
    expected = predict(convcnp, context, targets, NORM, progress=False)
    out = stream(tmp_path, convcnp, context, targets, block_time=6, block_side=6)
    assert out["mean"].dims == ("time", "latitude", "longitude")
    xr.testing.assert_allclose(out, expected, **TOLERANCE)


@pytest.mark.parametrize("key", ["convcnp_approx", "tepttnp_approx"])
def test_a_4d_model_takes_the_elevation_of_every_cell(tmp_path, key):
    four_d, context = model(key, dim_x=4), field(num_times=4)
    expected = predict(four_d, context, grid(4), NORM, progress=False, elevation=elevation())
    out = stream(
        tmp_path, four_d, context, grid(4), block_time=2, block_side=12, elevation=elevation()
    )
    xr.testing.assert_allclose(out, expected, **TOLERANCE)


def test_stations_give_the_store_they_give_in_memory(tmp_path):
    convcnp = model("convcnp_approx")
    stations = field(num_times=5).to_dataframe().reset_index().dropna()
    expected = predict(convcnp, stations, grid(), NORM, progress=False)
    assert expected["mean"].dims == ("time", "latitude", "longitude")
    xr.testing.assert_allclose(
        stream(tmp_path, convcnp, stations, grid(), **BLOCKS), expected, **TOLERANCE
    )


def test_context_off_the_grid_is_counted_and_refused_as_in_memory(tmp_path):
    convcnp = model("convcnp_approx")
    targets = grid().isel(latitude=slice(0, 20))  # the context's northern 20 latitudes
    context = field(num_times=3)
    with pytest.warns(UserWarning) as in_memory:
        predict(convcnp, context, targets, NORM, progress=False)
    with pytest.warns(UserWarning) as streamed:
        stream(tmp_path, convcnp, context, targets, **BLOCKS)
    assert [str(w.message) for w in streamed] == [str(w.message) for w in in_memory]
    assert re.match(r"\d+ of \d+ context points lie more", str(streamed[0].message))
    assert all(w.filename == __file__ for w in streamed)  # the caller of predict_to_zarr
    # The second task (third step: the first, empty, is none) is observed south of the
    # targets only.
    context[:, :20] = np.nan
    context[0] = np.nan
    context[1, 5, 5] = 290.0
    with pytest.raises(InputError) as in_memory:
        predict(convcnp, context, targets, NORM, progress=False)
    with pytest.raises(InputError, match="no context point of task 1 lies on the target grid"):
        stream(tmp_path, convcnp, context, targets, name="q.zarr", **BLOCKS)
    assert "task 1" in str(in_memory.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.zarr"]


class Interrupted(Exception):
    """Stands for Ctrl-C or a killed process."""


def interrupt_writes_after(monkeypatch, num_writes):
    """Makes writes to ``mean`` and ``std`` fail after ``num_writes`` of them; returns their
    count."""
    count = {"writes": 0}
    write = zarr.Array.__setitem__

    def counted(self, key, value):
        if self.basename in ("mean", "std"):
            if count["writes"] == num_writes:
                raise Interrupted
            count["writes"] += 1
        write(self, key, value)

    monkeypatch.setattr(zarr.Array, "__setitem__", counted)
    return count


def partial_folder(tmp_path):
    return tmp_path / ".p.zarr.resumable.partial"


def test_an_interrupted_prediction_resumes_from_its_finished_blocks(tmp_path, monkeypatch):
    convcnp, context = model("convcnp_approx"), field(num_times=8)
    # Interrupted between the mean and the std of the fourth block.
    interrupt_writes_after(monkeypatch, 2 * 3 + 1)
    with pytest.raises(Interrupted):
        stream(tmp_path, convcnp, context, grid(), **BLOCKS)
    assert not (tmp_path / "p.zarr").exists()
    assert len(list((partial_folder(tmp_path) / "done").iterdir())) == 3
    monkeypatch.undo()
    count = interrupt_writes_after(monkeypatch, -1)  # counts, never fails
    out = stream(tmp_path, convcnp, context, grid(), **BLOCKS)
    num_blocks = 1 * 3 * 4
    assert count["writes"] == 2 * (num_blocks - 3)
    xr.testing.assert_allclose(
        out, predict(convcnp, context, grid(), NORM, progress=False), **TOLERANCE
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.zarr"]


@pytest.mark.parametrize("differs", ["context", "model"])
def test_a_partial_prediction_of_other_inputs_is_refused_and_kept(tmp_path, monkeypatch, differs):
    convcnp, context = model("convcnp_approx"), field(num_times=4)
    interrupt_writes_after(monkeypatch, 2)
    with pytest.raises(Interrupted):
        stream(tmp_path, convcnp, context, grid(), **BLOCKS)
    monkeypatch.undo()
    other_model, other_context = convcnp, context.copy()
    if differs == "context":
        other_context[0, 0, 0] = 300.0
    else:
        other_model = model("convcnp_approx")
        with torch.no_grad():
            next(other_model.parameters()).add_(1e-9)
    folder = partial_folder(tmp_path)
    with pytest.raises(
        InputError, match=f"{re.escape(str(folder))} holds an unfinished .*different: {differs}\\)"
    ):
        stream(tmp_path, other_model, other_context, grid(), **BLOCKS)
    assert [p.name for p in (folder / "done").iterdir()] == ["0-0-0"]
    out = stream(tmp_path, convcnp, context, grid(), **BLOCKS)
    xr.testing.assert_allclose(
        out, predict(convcnp, context, grid(), NORM, progress=False), **TOLERANCE
    )


def test_an_existing_out_is_refused_and_kept(tmp_path):
    (tmp_path / "p.zarr").write_text("mine")
    with pytest.raises(InputError, match=r"p\.zarr is an existing file"):
        stream(tmp_path, model("convcnp_approx"), field(num_times=2), grid())
    assert (tmp_path / "p.zarr").read_text() == "mine"
    with pytest.raises(InputError, match=r"a path ending in \.zarr"):
        predict_to_zarr(
            model("convcnp_approx"), field(num_times=2), grid(), tmp_path / "p.nc", NORM
        )


class Recording:
    """An array that records which cells are read, for dask to read chunk by chunk."""

    def __init__(self, values):
        self.values, self.cells_read = values, 0
        self.shape, self.dtype, self.ndim = values.shape, values.dtype, values.ndim

    def __getitem__(self, key):
        part = self.values[key]
        self.cells_read += part.size
        return part


@pytest.mark.filterwarnings("ignore::aenp.prediction.ExtrapolationWarning")
def test_a_block_reads_its_time_steps_and_region_only(tmp_path, monkeypatch):
    lat, lon = np.arange(30.0, 78.0, 1.0), np.arange(240.0, 312.0, 1.0)
    values = field(num_times=4, lat=lat, lon=lon)
    recording = Recording(values.values)
    lazy = values.copy(data=dask.array.from_array(recording, chunks=(1, 4, 4)))
    reads = []
    read = FieldContext.read

    def measured(self, steps, keep=None):
        before = recording.cells_read
        frame = read(self, steps, keep)
        reads.append(recording.cells_read - before)
        return frame

    monkeypatch.setattr(FieldContext, "read", measured)
    convcnp = model("convcnp_approx", cnn="conv", num_layers=1)  # a halo of one cell
    targets = xr.Dataset(coords={"latitude": lat, "longitude": lon})
    out = stream(tmp_path, convcnp, lazy, targets, block_time=2, block_side=24)
    expected = predict(convcnp, values, targets, NORM, progress=False)
    xr.testing.assert_allclose(out, expected, **TOLERANCE)
    assert len(reads) == 2 * 2 * 3
    # A block reads its two time steps around its 24 × 24 cells, a cell further, in chunks
    # of 4 × 4 cells: at most 32 × 32 cells a step, not the field.
    assert max(reads) <= 2 * 32 * 32 < values[:2].size / 3


def test_predict_with_out_and_the_command_line_write_the_store(tmp_path, capsys):
    from aenp.cli import main

    convcnp, context = model("convcnp_approx"), field(num_times=3)
    expected = predict(convcnp, context, grid(), NORM, progress=False)
    lazy = predict(convcnp, context, grid(), NORM, progress=False, out=tmp_path / "a.zarr")
    assert lazy["mean"].chunks is not None
    xr.testing.assert_allclose(lazy.load(), expected, **TOLERANCE)
    assert "predict" not in capsys.readouterr().err
    aenp.save(convcnp, tmp_path / "run" / "model", metadata={"normalisation": NORM.to_dict()})
    context.to_dataset().to_netcdf(tmp_path / "context.nc")
    grid().to_netcdf(tmp_path / "targets.nc")
    argv = ["predict", str(tmp_path / "run"), "--context", str(tmp_path / "context.nc")]
    argv += ["--targets", str(tmp_path / "targets.nc"), "--out", str(tmp_path / "b.zarr")]
    assert main([*argv, "--block-time", "2", "--block-side", "16"]) == 0
    assert re.search(r"predict: 100%.* 12/12", capsys.readouterr().err)
    written = xr.open_zarr(tmp_path / "b.zarr")
    assert written["mean"].encoding["chunks"] == (2, 16, 16)
    loaded = predict(tmp_path / "run", context, grid(), progress=False)
    xr.testing.assert_allclose(written.load(), loaded, **TOLERANCE)
