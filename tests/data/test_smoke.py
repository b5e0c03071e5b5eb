"""The smoke store: PhiFlow plumes, resumable generation, faults, and checks on opening.

Only the first two tests run PhiFlow (on the shared tiny store); the others replace the
simulation with :func:`plumes`, which is fast, so that generation, resumption and the store's
checks can be tried on many stores.
"""

import json
import re
import shlex
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

import aenp.data.smoke as smoke
from aenp.cli import main
from aenp.data.smoke import SimulationError, SmokeSettings, SmokeStore, SmokeStoreError, generate
from aenp.errors import InputError, InputTypeError

SETTINGS = SmokeSettings(resolution=8, num_steps=3, time_step=0.1, seed=1)
"""No setting is a default, so a printed command that leaves one out cannot resume."""
NUM_TRAIN, NUM_TEST, BATCH_SIZE = 5, 2, 2
"""Batches: train [0, 1], [2, 3], [4]; test [0, 1]."""


def plumes(parameters, settings):
    """A fast stand-in for the simulation, ``[n, res, res]``: a blob at each inflow.

    Every field also depends on the other simulations of its batch, as PhiFlow's batched
    pressure solve does, so a resumed run that batched differently would give another store.
    """
    centres = (np.arange(settings.resolution) + 0.5) / settings.resolution
    x, y, radius = (parameters[:, i, None, None] for i in range(3))
    squared = (centres[:, None] - x) ** 2 + (centres[None, :] - y) ** 2
    return (np.exp(-squared / (4 * radius**2)) + parameters[:, 4].mean()).astype(np.float32)


class Killed(BaseException):
    """The process ending mid-run (a BaseException, like KeyboardInterrupt: nothing catches it)."""


class Simulator:
    """:func:`plumes`, recording the parameters of every batch; ``fail_at`` raises ``fault``."""

    def __init__(self, fail_at=None, fault=Killed):
        self.batches, self.fail_at, self.fault = [], fail_at, fault

    def __call__(self, parameters, settings):
        if len(self.batches) == self.fail_at:
            raise self.fault("killed")
        self.batches.append(parameters)
        return plumes(parameters, settings)


def simulate_with(monkeypatch, **kwargs):
    simulator = Simulator(**kwargs)
    monkeypatch.setattr(smoke, "simulate", simulator)
    return simulator


def make(out):
    return generate(out, NUM_TRAIN, NUM_TEST, SETTINGS, batch_size=BATCH_SIZE, progress=False)


def parameters_of(split, indices):
    """The parameters simulation ``i`` of ``split`` must be run with, ``[len(indices), 5]``."""
    seeds = [smoke.simulation_seed(SETTINGS, split, i) for i in indices]
    return np.stack([smoke.simulation_parameters(s) for s in seeds])


def manifest(out):
    return json.loads((Path(out) / "manifest.json").read_text())


def contents(out, splits=smoke.SPLITS):
    """Every array of the splits of a store, read without the store's checks."""
    group = zarr.open_group(Path(out) / "smoke.zarr", mode="r")
    return {f"{s}/{a}": group[f"{s}/{a}"][:] for s in splits for a in smoke.ARRAYS}


def assert_same_store(out, reference):
    """Same arrays and the same manifest, chunk checksums included (so the same bytes)."""
    for name, array in contents(reference).items():
        np.testing.assert_array_equal(contents(out)[name], array, err_msg=name)
    assert manifest(out) == manifest(reference)


@pytest.fixture
def reference(tmp_path, monkeypatch):
    """A store made without interruption by :func:`plumes`."""
    simulate_with(monkeypatch)
    return make(tmp_path / "reference")


def printed_command(message):
    return shlex.split(re.search(r"`(aenp data smoke [^`]*)`", message).group(1))


def test_store_reads_back_with_plumes_in_it(smoke_store):
    store = SmokeStore(smoke_store)
    density = store.density("train")[:]
    assert density.shape == (10, 16, 16) and store.resolution == 16 and len(store) == 13
    assert (density >= 0).all() and (density.reshape(10, -1).max(axis=1) > 0.01).all()
    written = manifest(smoke_store)
    assert written["status"] == "complete" and written["simulator"].startswith("phiflow")
    assert len(written["chunks"]) == 2 + 1 + 1 + 1 + 1 + 1  # train density has two chunks


def test_a_batch_simulated_again_matches_the_store(smoke_store):
    settings = SmokeSettings(resolution=16, num_steps=4)
    seeds = [smoke.simulation_seed(settings, "test", i) for i in range(3)]
    parameters = np.stack([smoke.simulation_parameters(s) for s in seeds])
    store = contents(smoke_store)
    np.testing.assert_array_equal(store["test/params"], parameters)
    np.testing.assert_array_equal(store["test/density"], smoke.simulate(parameters, settings))
    other_seed = SmokeSettings(resolution=16, num_steps=4, seed=1)
    assert smoke.simulation_seed(other_seed, "test", 0) != seeds[0]


def test_resume_simulates_only_the_missing_batches(tmp_path, monkeypatch, reference):
    out = tmp_path / "store"
    simulate_with(monkeypatch, fail_at=2)  # killed while simulating train [4]
    with pytest.raises(Killed):
        make(out)
    resumed = simulate_with(monkeypatch)
    make(out)
    assert len(resumed.batches) == 2
    np.testing.assert_array_equal(resumed.batches[0], parameters_of("train", [4]))
    np.testing.assert_array_equal(resumed.batches[1], parameters_of("test", [0, 1]))
    assert_same_store(out, reference)


def test_a_killed_run_keeps_its_batches_and_the_printed_command_resumes_it(
    tmp_path, monkeypatch, reference
):
    out = tmp_path / "store"
    simulate_with(monkeypatch, fail_at=1)  # killed while simulating train [2, 3]
    with pytest.raises(Killed):
        make(out)
    written = contents(out, ["train"])
    assert written["train/done"].tolist() == [True, True, False, False, False]
    np.testing.assert_array_equal(
        written["train/density"][:2], contents(reference)["train/density"][:2]
    )
    assert manifest(out)["status"] == "incomplete" and "chunks" not in manifest(out)
    with pytest.raises(SmokeStoreError, match="is incomplete") as refused:
        SmokeStore(out)
    simulate_with(monkeypatch)
    assert main(printed_command(str(refused.value))[1:]) == 0
    assert_same_store(out, reference)


def test_a_chunk_write_that_fails_is_redone_on_resume(tmp_path, monkeypatch, reference):
    out = tmp_path / "store"
    real_set, done_writes = LocalStore.set, []

    async def failing_set(self, key, value):
        if key == "train/done/c/0":
            done_writes.append(key)
            if len(done_writes) == 2:  # train [2, 3]: its density and params are written
                raise OSError("no space left on device")
        return await real_set(self, key, value)

    simulate_with(monkeypatch)
    monkeypatch.setattr(LocalStore, "set", failing_set)
    with pytest.raises(OSError, match="no space left"):
        make(out)
    assert (out / "smoke.zarr" / "train" / "density" / "c" / "1" / "0" / "0").is_file()
    assert contents(out, ["train"])["train/done"].tolist() == [True, True, False, False, False]
    assert manifest(out)["status"] == "incomplete"
    monkeypatch.setattr(LocalStore, "set", real_set)
    resumed = simulate_with(monkeypatch)
    make(out)
    assert [len(b) for b in resumed.batches] == [2, 1, 2]
    assert_same_store(out, reference)


def test_a_garbage_chunk_in_a_partial_store_is_named_before_resuming(tmp_path, monkeypatch):
    out = tmp_path / "store"
    simulate_with(monkeypatch, fail_at=1)
    with pytest.raises(Killed):
        make(out)
    file = out / "smoke.zarr" / "train" / "done" / "c" / "0"
    file.write_bytes(np.random.default_rng(0).bytes(file.stat().st_size))
    before = manifest(out)
    resumed = simulate_with(monkeypatch)
    with pytest.raises(SmokeStoreError, match=f"{re.escape(str(file))} of array train/done is"):
        make(out)
    assert resumed.batches == [] and manifest(out) == before


def test_a_manifest_write_that_fails_leaves_the_previous_manifest(tmp_path, monkeypatch, reference):
    out = tmp_path / "store"
    real_write_text = Path.write_text

    def torn_write_text(self, text, *args, **kwargs):
        if '"complete"' in text:  # the last manifest: half of it reaches the disk
            real_write_text(self, text[: len(text) // 2], *args, **kwargs)
            raise OSError("no space left on device")
        return real_write_text(self, text, *args, **kwargs)

    simulate_with(monkeypatch)
    monkeypatch.setattr(Path, "write_text", torn_write_text)
    with pytest.raises(OSError, match="no space left"):
        make(out)
    monkeypatch.setattr(Path, "write_text", real_write_text)
    assert manifest(out)["status"] == "incomplete"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "smoke.zarr"]
    resumed = simulate_with(monkeypatch)
    make(out)
    assert resumed.batches == []
    assert_same_store(out, reference)


@pytest.mark.parametrize("chunk", ["train/density/c/1/0/0", "test/params/c/0/0", "train/done/c/0"])
@pytest.mark.parametrize("damage", ["deleted", "overwritten"])
def test_a_missing_or_garbage_chunk_is_refused_naming_array_and_file(reference, chunk, damage):
    intact = reference.with_name("intact")
    shutil.copytree(reference, intact)
    file = reference / "smoke.zarr" / chunk
    size = file.stat().st_size
    file.unlink()
    if damage == "overwritten":  # random bytes of the same length: only a checksum sees it
        file.write_bytes(np.random.default_rng(0).bytes(size))
    array = chunk.split("/c/")[0]
    problem = "is missing" if damage == "deleted" else "is corrupt"
    with pytest.raises(
        SmokeStoreError, match=f"{re.escape(str(file))} of array {array} {problem}"
    ) as refused:
        SmokeStore(reference)
    # The advice, followed, makes the store again.
    assert f"delete {reference / 'smoke.zarr'} and run `aenp data smoke" in str(refused.value)
    shutil.rmtree(reference / "smoke.zarr")
    assert main(printed_command(str(refused.value))[1:]) == 0
    SmokeStore(reference)
    assert_same_store(reference, intact)


def test_a_format_1_store_is_decoded_on_opening_and_upgraded_by_running_again(
    reference, monkeypatch
):
    checksummed = manifest(reference)
    old = {k: v for k, v in checksummed.items() if k != "chunks"} | {"format_version": 1}
    (reference / "manifest.json").write_text(json.dumps(old))
    np.testing.assert_array_equal(
        SmokeStore(reference).density("train")[:], contents(reference)["train/density"]
    )
    rerun = simulate_with(monkeypatch)
    make(reference)
    assert rerun.batches == [] and manifest(reference) == checksummed
    (reference / "manifest.json").write_text(json.dumps(old))
    file = reference / "smoke.zarr" / "test" / "density" / "c" / "0" / "0" / "0"
    file.write_bytes(np.random.default_rng(0).bytes(file.stat().st_size))
    with pytest.raises(SmokeStoreError, match="of array test/density is corrupt: it cannot be"):
        SmokeStore(reference)


def test_resuming_with_other_options_is_refused_with_the_command_that_resumes(reference):
    with pytest.raises(SmokeStoreError, match=r"made with settings") as refused:
        generate(reference, NUM_TRAIN, NUM_TEST, SmokeSettings(8, 3, 0.1, seed=3), BATCH_SIZE)
    with pytest.raises(SmokeStoreError, match="made with counts"):
        generate(reference, 6, NUM_TEST, SETTINGS, batch_size=BATCH_SIZE)
    with pytest.raises(SmokeStoreError, match="made with batch_size"):
        generate(reference, NUM_TRAIN, NUM_TEST, SETTINGS, batch_size=3)
    argv = printed_command(str(refused.value))[1:]
    options = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert options == {
        "--num-train": "5",
        "--num-test": "2",
        "--resolution": "8",
        "--steps": "3",
        "--time-step": "0.1",
        "--seed": "1",
        "--batch-size": "2",
        "--out": str(reference),
    }


def test_a_failed_simulation_is_reported_by_seed_and_not_written(tmp_path, monkeypatch):
    bad_seed = smoke.simulation_seed(SETTINGS, "train", 1)
    bad_params = smoke.simulation_parameters(bad_seed)

    def flaky(parameters, settings):
        if any(np.array_equal(p, bad_params) for p in parameters):
            raise SimulationError("pressure solve did not converge")
        return plumes(parameters, settings)

    monkeypatch.setattr(smoke, "simulate", flaky)
    with pytest.raises(SimulationError, match=f"train #1 \\(seed {bad_seed}\\)"):
        generate(tmp_path, 3, 1, SETTINGS, batch_size=2, progress=False)
    assert contents(tmp_path)["train/done"].tolist() == [True, False, True]
    assert manifest(tmp_path)["failures"][0]["seed"] == bad_seed
    with pytest.raises(SmokeStoreError, match="is failed"):
        SmokeStore(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"colour": "blue"}, r"the manifest has unknown key\(s\) \['colour'\]"),
        ({"settings": {**asdict(SETTINGS), "viscosity": 0.1}}, r"settings has unknown .*viscosity"),
        ({"settings": {"resolution": 8}}, r"settings lacks key\(s\) \['num_steps'"),
        ({"counts": {"train": 5, "val": 2}}, r"counts has unknown key\(s\) \['val'\]"),
        (
            {"settings": {**asdict(SETTINGS), "resolution": -8}},
            "resolution must be an integer of at least 1",
        ),
        ({"batch_size": 0}, "batch_size must be an integer of at least 1"),
        ({"format_version": 3}, "format_version 3 is not one this aenp reads"),
        ({"status": "done"}, "status must be one of"),
    ],
)
def test_a_manifest_with_an_unknown_or_bad_key_is_refused_naming_key_and_file(
    reference, edit, message
):
    (reference / "manifest.json").write_text(json.dumps(manifest(reference) | edit))
    with pytest.raises(
        SmokeStoreError, match=f"{re.escape(str(reference / 'manifest.json'))}: {message}"
    ):
        SmokeStore(reference)


def test_missing_or_unreadable_manifests_are_named(tmp_path):
    with pytest.raises(SmokeStoreError, match="no smoke store at"):
        SmokeStore(tmp_path / "nowhere")
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(SmokeStoreError, match="not a readable smoke manifest"):
        SmokeStore(tmp_path)
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(SmokeStoreError, match="the manifest must be a JSON object"):
        SmokeStore(tmp_path)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"resolution": 0}, InputError, "resolution must be an integer of at least 1, got 0"),
        ({"resolution": -8}, InputError, "resolution must be an integer of at least 1, got -8"),
        ({"resolution": 8.0}, InputTypeError, "resolution must be an integer, got 8.0"),
        ({"num_steps": 0}, InputError, "num_steps must be an integer of at least 1"),
        ({"num_steps": True}, InputTypeError, "num_steps must be an integer, got True"),
        ({"seed": -1}, InputError, "seed must be an integer of at least 0, got -1"),
        ({"time_step": 0.0}, InputError, "time_step must be positive and finite, got 0.0"),
        ({"time_step": float("nan")}, InputError, "time_step must be positive and finite"),
        ({"time_step": "0.1"}, InputTypeError, "time_step must be a number"),
    ],
)
def test_bad_settings_are_named(options, error, message):
    with pytest.raises(error, match=re.escape(message)):
        SmokeSettings(**options)


def test_bad_generate_arguments_are_named(tmp_path):
    with pytest.raises(InputError, match="num_train must be an integer of at least 1, got 0"):
        generate(tmp_path, 0, 1, SETTINGS)
    with pytest.raises(InputError, match="num_test must be an integer of at least 1, got -1"):
        generate(tmp_path, 1, -1, SETTINGS)
    with pytest.raises(InputError, match="batch_size must be an integer of at least 1, got 0"):
        generate(tmp_path, 1, 1, SETTINGS, batch_size=0)
    with pytest.raises(InputTypeError, match="settings must be a SmokeSettings"):
        generate(tmp_path, 1, 1, {"resolution": 8})
    file = tmp_path / "a-file"
    file.write_text("not a store")
    with pytest.raises(InputError, match=f"out {re.escape(str(file))} is a file"):
        generate(file, 1, 1, SETTINGS)
    assert not any(tmp_path.glob("*.json"))


@pytest.mark.parametrize(
    ("option", "value"),
    [("--resolution", "0"), ("--resolution", "-8"), ("--batch-size", "0"), ("--steps", "-1")],
)
def test_cli_refuses_sizes_below_one(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exited:
        main(["data", "smoke", option, value, "--out", str(tmp_path)])
    assert exited.value.code == 2
    assert (
        f"argument {option}: expected a positive integer, got {int(value)}"
        in capsys.readouterr().err
    )
    assert not any(tmp_path.iterdir())


def test_cli_names_a_bad_seed_time_step_or_out(tmp_path, capsys):
    file = tmp_path / "a-file"
    file.write_text("not a store")
    for argv, message in [
        (["--seed", "-1", "--out", str(tmp_path)], "seed must be an integer of at least 0"),
        (["--time-step", "0", "--out", str(tmp_path)], "time_step must be positive"),
        (["--out", str(file)], f"out {file} is a file"),
    ]:
        assert main(["data", "smoke", *argv]) == 2
        assert message in capsys.readouterr().err


def test_cli_generates_a_store_with_every_option(tmp_path, monkeypatch):
    simulator = simulate_with(monkeypatch)
    argv = ["data", "smoke", "--num-train", "3", "--num-test", "1", "--resolution", "8"]
    argv += ["--steps", "2", "--time-step", "0.1", "--seed", "4", "--batch-size", "2"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert [len(b) for b in simulator.batches] == [2, 1, 1]
    written = manifest(tmp_path)
    assert written["settings"] == {"resolution": 8, "num_steps": 2, "time_step": 0.1, "seed": 4}
    assert written["counts"] == {"train": 3, "test": 1} and written["batch_size"] == 2
    assert SmokeStore(tmp_path).density("test").shape == (1, 8, 8)
