import json

import numpy as np
import pytest

import aenp.data.smoke as smoke
from aenp.cli import main
from aenp.data.smoke import SimulationError, SmokeSettings, SmokeStore, SmokeStoreError, generate

TINY = SmokeSettings(resolution=16, num_steps=4)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("ref"), 5, 2, TINY, batch_size=2, progress=False)


def arrays(path):
    store = SmokeStore(path)
    return {split: store.density(split)[:] for split in ("train", "test")}


def test_store_reads_back_with_plumes_in_it(reference):
    store = SmokeStore(reference)
    density = store.density("train")[:]
    assert density.shape == (5, 16, 16) and store.resolution == 16 and len(store) == 7
    assert (density >= 0).all() and (density.reshape(5, -1).max(axis=1) > 0.01).all()
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["simulator"].startswith("phiflow")


def test_generation_is_deterministic_for_a_seed(reference, tmp_path):
    again = arrays(generate(tmp_path / "a", 5, 2, TINY, batch_size=2, progress=False))
    for split, density in arrays(reference).items():
        np.testing.assert_array_equal(again[split], density)
    other = arrays(generate(tmp_path / "b", 5, 2, SmokeSettings(16, 4, seed=1), 2, False))
    assert not np.array_equal(other["train"], arrays(reference)["train"])


def test_interrupted_generation_resumes_to_the_same_store(reference, tmp_path):
    out = generate(tmp_path, 5, 2, TINY, batch_size=2, progress=False)
    import zarr

    group = zarr.open_group(out / "smoke.zarr", mode="a")
    group["train/done"][2:4] = False  # a batch that never finished writing
    group["train/density"][2:4] = 0.0
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "status": "incomplete"}))
    with pytest.raises(SmokeStoreError, match=r"is incomplete.*again to finish it"):
        SmokeStore(out)
    generate(out, 5, 2, TINY, batch_size=2, progress=False)
    np.testing.assert_array_equal(arrays(out)["train"], arrays(reference)["train"])


def test_resuming_with_other_options_is_refused(reference):
    with pytest.raises(SmokeStoreError, match=r"made with settings"):
        generate(reference, 5, 2, SmokeSettings(16, 4, seed=3), batch_size=2, progress=False)
    with pytest.raises(SmokeStoreError, match="made with counts"):
        generate(reference, 6, 2, TINY, batch_size=2, progress=False)


def test_a_failed_simulation_is_reported_by_seed_and_not_written(tmp_path, monkeypatch):
    bad_seed = smoke.simulation_seed(TINY, "train", 1)
    bad_params = smoke.simulation_parameters(bad_seed)
    real = smoke.simulate

    def flaky(parameters, settings):
        if any(np.array_equal(p, bad_params) for p in parameters):
            raise SimulationError("pressure solve did not converge")
        return real(parameters, settings)

    monkeypatch.setattr(smoke, "simulate", flaky)
    with pytest.raises(SimulationError, match=f"train #1 \\(seed {bad_seed}\\)"):
        generate(tmp_path, 3, 1, TINY, batch_size=2, progress=False)
    import zarr

    group = zarr.open_group(tmp_path / "smoke.zarr", mode="r")
    assert group["train/done"][:].tolist() == [True, False, True]
    assert json.loads((tmp_path / "manifest.json").read_text())["failures"][0]["seed"] == bad_seed
    with pytest.raises(SmokeStoreError, match="is failed"):
        SmokeStore(tmp_path)


def test_missing_or_corrupt_stores_are_named(tmp_path, reference):
    with pytest.raises(SmokeStoreError, match="no smoke store at"):
        SmokeStore(tmp_path / "nowhere")
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(SmokeStoreError, match="not a readable smoke manifest"):
        SmokeStore(tmp_path)


def test_cli_generates_a_store(tmp_path):
    argv = ["data", "smoke", "--num-train", "2", "--num-test", "1", "--resolution", "16"]
    argv += ["--steps", "2", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert SmokeStore(tmp_path).density("test").shape == (1, 16, 16)
