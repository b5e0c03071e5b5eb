"""Fields larger than memory: lazy opening, streaming normalisation, chunk-aware sampling."""

import contextlib
import dataclasses

import dask
import numpy as np
import pytest
import torch
import xarray as xr
from omegaconf import OmegaConf

import aenp
import aenp.data.climate.chunks
from aenp.data.climate import (
    BlockCache,
    ChunkReader,
    Climate,
    Normalisation,
    decimal_years,
    normalise_conventions,
    observed_fraction,
    open_field,
    select_region,
    select_years,
    synthetic_field,
    time_blocks,
    write_synthetic_field,
)
from aenp.errors import InputError, InputTypeError
from aenp.run_directory import RunDirectory

SIZES = (40, 30, 40)
"""Steps every 73 days over 2000-2007, 30 × 40 cells over 35-72°N, 25°W-45°E."""
CHUNKS = (7, 11, 13)
SPLITS = {
    "train_region": "35,72,-25,10",
    "ood_region": "35,72,10,45",
    "train_years": (2000, 2004),
    "val_years": (2005, 2005),
    "test_years": (2006, 2007),
    "patch": 8,
    "window": 3,
    "progress": False,
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The synthetic field in a zarr store of 7 × 11 × 13 chunks."""
    path = tmp_path_factory.mktemp("lazy") / "field.zarr"
    return write_synthetic_field(path, *SIZES, freq="73D", chunks=CHUNKS, progress=False)


@pytest.fixture(scope="module")
def reference(store):
    """The stored values in memory, read without aenp: the independent reference."""
    return xr.open_zarr(store)["t2m"].load()


def make(data, **options):
    """A climate experiment on the synthetic field, every split lazy unless told otherwise."""
    return Climate(data, **{**SPLITS, "max_in_memory_bytes": 0, **options})


@contextlib.contextmanager
def recorded_reads():
    """Records how many values each dask computation returns (a list, filled on exit)."""
    sizes = []

    def count(result) -> int:
        if isinstance(result, list | tuple):
            return sum(count(part) for part in result)
        return getattr(result, "size", 0)

    def get(graph, keys, **kwargs):
        result = dask.get(graph, keys, **kwargs)
        sizes.append(count(result))
        return result

    with dask.config.set(scheduler=get):
        yield sizes


def refuse(graph, keys, **kwargs):
    raise AssertionError("a lazy field was read")


def test_open_field_stays_lazy_in_the_files_chunks_through_conventions_and_selections(tmp_path):
    # An old-style ERA5 file: expver versions, latitude north to south, longitude 0-360.
    lat, lon = np.arange(60.0, 27.5, -2.5), np.arange(0.0, 360.0, 22.5)
    values = np.random.default_rng(0).normal(280, 5, (2, 12, len(lat), len(lon)))
    values[0, 8:], values[1, :8] = np.nan, np.nan
    times = np.array([f"{y}-07-01" for y in range(2000, 2012)], dtype="datetime64[ns]")
    dataset = xr.Dataset(
        {"t2m": (("expver", "time", "latitude", "longitude"), values)},
        coords={"expver": [1, 5], "time": times, "latitude": lat, "longitude": lon},
    )
    encoding = {"t2m": {"chunksizes": (1, 4, 5, 6)}}
    dataset.to_netcdf(tmp_path / "era5.nc", encoding=encoding)
    with dask.config.set(scheduler=refuse):
        field = open_field(tmp_path / "era5.nc")
        part = select_years(select_region(field, "30,60,-100,100"), (2001, 2010))
    # Reversed rows, longitudes cut at 180° and years keep every chunk in one stored chunk.
    assert field.chunks == ((4, 4, 4), (3, 5, 5), (4, 4, 6, 2))
    assert part.chunks[0] == (3, 4, 3)
    expected = normalise_conventions(dataset["t2m"].rename(latitude="lat", longitude="lon"))
    np.testing.assert_array_equal(field.values, expected.values)
    np.testing.assert_array_equal(field.values, np.fmax(*values)[:, ::-1][..., np.r_[8:16, 0:8]])
    np.testing.assert_array_equal(part.values, expected.sel(lon=slice(-100, 100))[1:11].values)


def test_an_opened_dataset_or_data_array_is_a_source(store, reference):
    dataset = xr.open_zarr(store)
    np.testing.assert_array_equal(open_field(dataset).values, reference.values)
    unnamed = open_field(reference.rename(None))
    assert unnamed.name == "field" and unnamed.chunks is None
    with pytest.raises(InputError, match=r"the Dataset given has no variable 'tas'"):
        open_field(dataset, "tas")
    with pytest.raises(InputTypeError, match="xarray Dataset or DataArray; got int"):
        open_field(42)


def test_time_blocks_are_whole_chunks_of_at_least_min_steps():
    field = xr.DataArray(np.zeros((25, 2, 2)), dims=("time", "lat", "lon")).chunk({"time": 7})
    spans = [(b.start, b.stop) for b in time_blocks(field)]
    assert spans == [(0, 7), (7, 14), (14, 21), (21, 25)]
    assert [(b.start, b.stop) for b in time_blocks(field, 8)] == [(0, 14), (14, 25)]
    # A remainder shorter than min_steps joins the block before it.
    assert [(b.start, b.stop) for b in time_blocks(field, 12)] == [(0, 25)]
    assert [(b.start, b.stop) for b in time_blocks(field, 30)] == [(0, 25)]


def field_with_gaps(num_time=40):
    """Random values with NaN cells, whole NaN steps (5-9 and 17) and a NaN column."""
    rng = np.random.default_rng(0)
    values = rng.normal(280.0, 12.0, (num_time, 6, 7))
    values[rng.random(values.shape) < 0.2] = np.nan
    values[5:10] = values[17] = values[:, :, 3] = np.nan
    times = np.arange(num_time) * np.timedelta64(30, "D") + np.datetime64("1990-01-01")
    coords = {"time": times, "lat": np.arange(6.0), "lon": np.arange(7.0) * 2}
    return xr.DataArray(values, dims=("time", "lat", "lon"), coords=coords)


@pytest.mark.parametrize("time_chunk", [1, 5, 7, 40])
@pytest.mark.parametrize("block_bytes", [1, aenp.data.climate.chunks.BLOCK_BYTES])
def test_streaming_normalisation_equals_numpy_for_any_chunking(
    monkeypatch, time_chunk, block_bytes
):
    monkeypatch.setattr(aenp.data.climate.chunks, "BLOCK_BYTES", block_bytes)
    field = field_with_gaps()
    lazy = Normalisation.fit(field.chunk({"time": time_chunk, "lat": 4}))
    values = field.values[np.isfinite(field.values)]
    assert lazy.value_mean == pytest.approx(np.mean(values), rel=1e-12, abs=0)
    assert lazy.value_std == pytest.approx(np.std(values), rel=1e-12, abs=0)
    # The coordinates' scales are the in-memory fit's, exactly.
    in_memory = Normalisation.fit(field).to_dict()
    for name, value in lazy.to_dict().items():
        if not name.startswith("value_"):
            assert value == in_memory[name], name


def test_streaming_normalisation_refuses_a_field_without_values():
    with pytest.raises(ValueError, match="0 finite values"):
        Normalisation.fit(field_with_gaps().where(False).chunk({"time": 4}))


def test_observed_fraction_of_a_lazy_field_counts_the_documented_steps():
    field = field_with_gaps()
    finite = np.isfinite(field.values)
    lazy = field.chunk({"time": 7})
    np.testing.assert_array_equal(observed_fraction(lazy), finite.mean(axis=0))
    # At most max_steps evenly spaced steps, the first and last among them.
    steps = [0, 10, 20, 29, 39]
    np.testing.assert_array_equal(observed_fraction(lazy, max_steps=5), finite[steps].mean(axis=0))
    np.testing.assert_array_equal(observed_fraction(field), finite.mean(axis=0))


def test_block_cache_drops_the_least_recently_used_within_its_bound():
    cache, reads = BlockCache(max_bytes=3 * 80), []

    def read(key):
        reads.append(key)
        return np.full(10, key, dtype=np.float64)  # 80 bytes

    for key in (1, 2, 3, 1, 4, 2, 1):
        np.testing.assert_array_equal(cache.get(key, lambda key=key: read(key)), key)
    assert reads == [1, 2, 3, 4, 2] and cache.nbytes == 240 and len(cache) == 3
    assert BlockCache(0).get(5, lambda: read(5))[0] == 5 and reads[-1] == 5


def test_a_batch_s_windows_lie_in_one_block_and_every_start_is_drawn():
    values = field_with_gaps(25).fillna(0.0)
    reader = ChunkReader(values.chunk({"time": 7, "lat": 4, "lon": 3}), 3, lambda v: v)
    expected = values.values.astype(np.float32)
    generator, drawn = torch.Generator().manual_seed(0), set()
    for _ in range(200):
        starts, windows = reader.sample(1, 2, 4, 4, generator)
        block = next(b for b in reader.blocks if b.start <= starts[0] < b.stop)
        assert all(block.start <= t <= block.stop - 3 for t in starts)
        for t, window in zip(starts, windows, strict=True):
            np.testing.assert_array_equal(window, expected[t : t + 3, 1:5, 2:6])
        drawn.update(starts)
    # Blocks of 7, 7, 7 and 4 steps: the windows that do not cross a block edge, all drawn.
    assert drawn == {0, 1, 2, 3, 4, 7, 8, 9, 10, 11, 14, 15, 16, 17, 18, 21, 22}


@pytest.mark.parametrize("dims", [2, 3])
def test_lazy_tasks_hold_the_normalised_field_at_their_coordinates(store, reference, dims):
    experiment = make(store, dims=dims)
    norm = experiment.normalisation
    kelvin = reference.values.astype(np.float32)
    expected = (kelvin - np.float32(norm.value_mean)) / np.float32(norm.value_std)
    years = decimal_years(reference)
    generator = torch.Generator().manual_seed(0)
    batches = [experiment.sample_train(4, generator) for _ in range(6)]
    batches += [item.batch for item in experiment.split("ood", 8, 4)]
    for batch in batches:
        lat, lon = norm.denormalise_coords(*(a.double().numpy() for a in batch.axes[-2:]))
        rows = np.abs(reference["lat"].values[:, None] - lat).argmin(axis=0)
        cols = np.abs(reference["lon"].values[:, None] - lon).argmin(axis=0)
        np.testing.assert_allclose(reference["lat"].values[rows], lat, atol=1e-4)
        np.testing.assert_allclose(reference["lon"].values[cols], lon, atol=1e-4)
        cells = expected[:, rows][:, :, cols]
        used = (batch.context_mask | batch.target_mask).numpy()
        y = batch.y[..., 0].numpy()
        if dims == 2:
            used, y = used[:, None], y[:, None]
        window = experiment.window
        for task in range(len(batch)):
            # Each task's first step, found by its values (the time axis is the first task's).
            mask = used[task]
            gaps = [
                np.nan_to_num(np.abs(cells[t : t + window][mask] - y[task][mask]).max(), nan=1e9)
                for t in range(len(cells) - window + 1)
            ]
            start = int(np.argmin(gaps))
            if dims == 3 and task == 0:
                first = norm.denormalise_time(batch.axes[0][0].item())
                assert start == np.abs(years - first).argmin()
            cell_values = cells[start : start + window]
            np.testing.assert_array_equal(mask, np.isfinite(cell_values))
            np.testing.assert_allclose(y[task][mask], cell_values[mask], atol=1e-6)


def test_same_seed_same_tasks_whatever_the_cache(store):
    def tasks(cache_bytes):
        experiment = make(store, dims=3, cache_bytes=cache_bytes)
        generator = torch.Generator().manual_seed(5)
        batches = [experiment.sample_train(4, generator) for _ in range(8)]
        return batches + [item.batch for item in experiment.split("val", 8, 4)]

    for a, b in zip(tasks(0), tasks(2**20), strict=True):
        for name in ("y", "context_mask", "target_mask"):
            assert torch.equal(getattr(a, name), getattr(b, name))
        assert all(torch.equal(p, q) for p, q in zip(a.axes, b.axes, strict=True))


def test_sampling_a_lazy_split_reads_blocks_not_the_split(store):
    experiment = make(store, dims=3)
    generator = torch.Generator().manual_seed(0)
    experiment.sample_train(4, generator)  # maps the observed cells first
    with recorded_reads() as sizes:
        for _ in range(10):
            experiment.sample_train(4, generator)
    train = experiment.split_field("train")
    assert train.chunks is not None and len(sizes) > 0
    # One time chunk over at most two chunks of rows and the region's two chunks of columns.
    assert train.chunks[2] == (13, 7)
    assert max(sizes) <= 7 * (2 * 11) * 20 < train.size


def test_a_field_that_fits_is_loaded_and_a_larger_one_stays_lazy_in_every_split(store):
    everything = make(store, max_in_memory_bytes=None)
    splits = ("train", "val", "test", "ood")
    assert not any(everything.split_field(s).chunks for s in splits)
    field_bytes = 4 * everything.field.size
    fits = make(store, max_in_memory_bytes=field_bytes)
    assert fits.field.chunks is None and not any(fits.split_field(s).chunks for s in splits)
    too_large = make(store, max_in_memory_bytes=field_bytes - 1)
    # Even splits smaller than the bound stay lazy: what is held is bounded by it.
    assert 4 * too_large.split_field("val").size < field_bytes - 1
    assert all(too_large.split_field(s).chunks is not None for s in splits)
    assert fits.normalisation == everything.normalisation
    mean = too_large.normalisation.value_mean
    assert mean == pytest.approx(everything.normalisation.value_mean, rel=1e-12)
    expected = everything.sample_train(4, torch.Generator().manual_seed(1))
    batch = fits.sample_train(4, torch.Generator().manual_seed(1))
    assert torch.equal(batch.y, expected.y) and torch.equal(batch.target_mask, expected.target_mask)


def test_a_lazy_field_given_as_a_dataset_samples_as_its_store(store, reference):
    dataset = synthetic_field(*SIZES, freq="73D", chunks=CHUNKS)
    from_store, given = make(store, dims=3), make(dataset, dims=3)
    assert given.split_field("train").chunks == from_store.split_field("train").chunks
    a = from_store.sample_train(4, torch.Generator().manual_seed(2))
    b = given.sample_train(4, torch.Generator().manual_seed(2))
    assert torch.equal(a.y, b.y) and torch.equal(a.context_mask, b.context_mask)
    # A field given in memory stays there, whatever the bound.
    assert make(reference).split_field("train").chunks is None


def test_a_lazy_field_in_chunks_too_large_to_read_is_refused_with_what_to_do(store, monkeypatch):
    chunk_bytes = 4 * 7 * 11 * 13
    monkeypatch.setattr(aenp.data.climate.chunks, "MAX_CHUNK_BYTES", chunk_bytes - 1)
    message = r"chunks of up to \{'time': 7, 'lat': 11, 'lon': 13\} cells.*to_zarr.*nccopy"
    with pytest.raises(InputError, match=message):
        make(store)
    monkeypatch.setattr(aenp.data.climate.chunks, "MAX_CHUNK_BYTES", chunk_bytes)
    assert make(store).split_field("train").chunks is not None


def test_four_dimensional_lazy_tasks_take_elevation_from_a_dataset(store):
    lat, lon = np.arange(34.0, 74.0, 2.0), np.arange(-26.0, 47.0, 3.0)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    elevation = xr.Dataset(
        {"orog": (("lat", "lon"), 100 + 10 * la + 2 * lo, {"units": "m"})},
        coords={"lat": lat, "lon": lon},
    )
    experiment = make(store, dims=4, elevation=elevation)
    norm = experiment.normalisation
    batch = experiment.sample_train(2, torch.Generator().manual_seed(0))
    x_lat, x_lon = (a.double().numpy() for a in batch.axes[1:3])
    cell_lat, cell_lon = np.meshgrid(*norm.denormalise_coords(x_lat, x_lon), indexing="ij")
    metres = batch.extra_inputs[0, ..., 0].double().numpy() * norm.elevation_scale
    np.testing.assert_allclose(
        metres + norm.elevation_origin, 100 + 10 * cell_lat + 2 * cell_lon, rtol=1e-5
    )
    north_only = elevation.sel(lat=slice(50, None))
    with pytest.raises(ValueError, match=r"elevation from the Dataset given is missing at \d+"):
        make(store, dims=4, elevation=north_only)


def test_bad_memory_options_are_named(store):
    with pytest.raises(ValueError, match="max_in_memory_bytes must be at least 0 or None"):
        make(store, max_in_memory_bytes=-1)
    with pytest.raises(ValueError, match="cache_bytes at least 0, got 0 and -5"):
        make(store, cache_bytes=-5)


def test_a_trained_run_rebuilds_its_lazy_experiment_with_the_saved_normalisation(
    store, tmp_path, monkeypatch
):
    fitted = make(store, dims=2)
    run = RunDirectory(tmp_path / "run")
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in SPLITS.items()}
    options.update(data=str(store), max_in_memory_bytes=0)
    run.write_config(OmegaConf.create({"experiment": {"name": "climate", "options": options}}))
    # A saved normalisation that fitting would not give: the rebuilt experiment must use it.
    saved = dataclasses.replace(fitted.normalisation, value_mean=1.0, value_std=2.0)
    model = aenp.build_model("convcnp", 2, 1, channels=4, num_layers=1)
    run.save_model(model, {"normalisation": saved.to_dict()})

    def refit(*args, **kwargs):
        raise AssertionError("the normalisation was fitted again: a full pass over the split")

    monkeypatch.setattr(Normalisation, "fit", refit)
    rebuilt = run.experiment()
    assert rebuilt.normalisation == saved
    batch = rebuilt.sample_train(2, torch.Generator().manual_seed(0))
    expected = fitted.sample_train(2, torch.Generator().manual_seed(0))
    # The same cells, normalised with the saved mean and standard deviation.
    observed = expected.context_mask | expected.target_mask
    raw = fitted.normalisation.denormalise_values(expected.y[observed])
    torch.testing.assert_close(batch.y[observed], saved.normalise_values(raw))
