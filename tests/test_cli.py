import json
import sys

import pytest
import torch

from aenp.cli import main, parse_args
from aenp.data.gp import gp1d_split, load_exported_tasks
from aenp.errors import InputError
from aenp.evaluate.run import evaluate_run
from aenp.prediction import ExtrapolationWarning


def test_models_lists_the_registry(capsys):
    assert main(["models"]) == 0
    assert "convcnp_approx" in capsys.readouterr().out.split()


def test_evaluate_a_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "is not a training run" in capsys.readouterr().err


def test_evaluate_hands_its_device_on(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), "--device", "gpu"]) == 2
    assert "device must name a device such as 'cpu' or 'cuda', got 'gpu'" in capsys.readouterr().err


def test_reproduce_an_unknown_experiment_is_a_clear_error(tmp_path, capsys):
    assert main(["reproduce", "weather", "--out", str(tmp_path)]) == 2
    assert "no reproduce plan for experiment 'weather'" in capsys.readouterr().err


def test_unknown_arguments_are_refused():
    with pytest.raises(SystemExit):
        main(["models", "--fast"])
    with pytest.raises(SystemExit):
        main(["reproduce", "gp1d", "--fast"])


@pytest.mark.parametrize("option", ["--seeds", "--parallel"])
@pytest.mark.parametrize("count", ["0", "-1"])
def test_seeds_and_parallel_must_be_positive(tmp_path, capsys, option, count):
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "gp1d", "--out", str(tmp_path / "out"), option, count])
    assert exit_info.value.code == 2
    assert f"{option}: expected a positive integer, got {count}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_seeds_and_parallel_reach_reproduce_and_parallel_reaches_ablate(monkeypatch, tmp_path):
    calls = {}
    monkeypatch.setattr("aenp.reproduce.reproduce", lambda *a, **k: calls.update(reproduce=k))
    monkeypatch.setattr("aenp.reproduce.ablate", lambda *a, **k: calls.update(ablate=k))
    out = ["--out", str(tmp_path)]
    assert main(["reproduce", "gp1d", *out, "--seeds", "3", "--parallel", "2", "seed=4"]) == 0
    assert calls["reproduce"] == {"seeds": 3, "parallel": 2}
    argv = ["ablate", "gp1d", "--model", "convcnp_approx", "--p-drop", "0", "0.5", *out]
    assert main([*argv, "--parallel", "2"]) == 0
    assert calls["ablate"] == {"parallel": 2}
    assert main(["reproduce", "gp1d", *out]) == 0
    assert calls["reproduce"] == {"seeds": 1, "parallel": 1}


def test_overrides_may_follow_options_of_several_values():
    argv = ["ablate", "gp1d", "--model", "convcnp_approx", "--p-drop", "0", "0.5"]
    args = parse_args([*argv, "trainer.max_epochs=1", "+seed=3"])
    assert args.p_drop == [0.0, 0.5]
    assert args.overrides == ["trainer.max_epochs=1", "+seed=3"]
    args = parse_args(["reproduce", "gp1d", "seed=1", "--scale", "quick"])
    assert (args.overrides, args.scale) == (["seed=1"], "quick")


@pytest.mark.parametrize("suffix", [".npz", ".nc"])
def test_data_export_writes_the_split_with_ground_truth(tmp_path, suffix):
    out = tmp_path / f"test{suffix}"
    assert (
        main(["data", "export", "gp1d", "--split", "test", "--out", str(out), "--num-tasks", "32"])
        == 0
    )
    exported = load_exported_tasks(out)
    expected = gp1d_split("test", 32)
    for (tasks, truth), (want_tasks, want_truth) in zip(exported, expected, strict=True):
        assert torch.equal(tasks.batch.yt, want_tasks.batch.yt)
        assert torch.equal(truth.loglik, want_truth.loglik)


@pytest.mark.parametrize(
    ("out", "message"),
    [("tasks.csv", "must end in one of .npz, .nc"), ("missing/tasks.npz", "does not exist")],
)
def test_data_export_checks_out_before_making_tasks(tmp_path, monkeypatch, capsys, out, message):
    def never(*args):
        raise AssertionError("tasks were made before --out was checked")

    monkeypatch.setattr("aenp.data.gp.gp1d_split", never)
    assert main(["data", "export", "gp1d", "--out", str(tmp_path / out)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("count", ["0", "-1"])
@pytest.mark.parametrize(
    "command", [["evaluate", "run"], ["data", "export", "gp1d", "--out", "tasks.npz"]]
)
def test_num_tasks_must_be_positive(tmp_path, monkeypatch, capsys, command, count):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--num-tasks", count])
    assert exit_info.value.code == 2
    assert f"--num-tasks: expected a positive integer, got {count}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_evaluate_run_refuses_zero_tasks_instead_of_the_default(tmp_path):
    with pytest.raises(InputError, match="num_tasks must be a positive integer or None, got 0"):
        evaluate_run(tmp_path, num_tasks=0)


def test_train_with_an_unknown_model_names_it(tmp_path, monkeypatch, capsys):
    # In this process, as Hydra refuses the config before it sets up logging or a run (a new
    # process costs seconds of imports; tests/train/test_training.py runs `aenp train` in one).
    monkeypatch.setattr(sys, "argv", sys.argv[:])  # `aenp train` hands its arguments to Hydra
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "model=gnp", f"run_dir={tmp_path}"])
    assert exit_info.value.code != 0
    stderr = capsys.readouterr().err
    assert "gnp" in stderr and "convcnp_approx" in stderr
    assert list(tmp_path.iterdir()) == []


def test_reproduce_end_to_end_writes_table_json_and_figures(tmp_path):
    tiny = [
        "data.num_train_tasks=32",
        "data.num_val_tasks=16",
        "data.num_test_tasks=32",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
    ]
    models = ["convcnp", "convcnp_approx"]
    sizes = ["model.hparams.channels=8", "model.hparams.num_layers=2"]
    argv = [
        "reproduce",
        "gp1d",
        "--out",
        str(tmp_path),
        "--models",
        ",".join(models),
        *tiny,
        *sizes,
    ]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    assert [r["model"] for r in summary["results"]] == models
    approx = summary["results"][1]["splits"]
    assert {"test", "ood", "test_strict", "ood_strict"} <= set(approx)
    assert approx["test"]["loglik"]["num_tasks"] == 32
    markdown = (tmp_path / "results.md").read_text()
    assert "| ConvCNP (T̃), fixed inputs zeroed |" in markdown
    assert "aenp train experiment=gp1d model=convcnp_approx" in markdown
    for figure in ("predictions.png", "fixed_inputs.png", "departure.png", "training_curves.png"):
        assert (tmp_path / figure).stat().st_size > 10_000


def test_ablation_of_the_number_of_fixed_inputs(tmp_path):
    tiny = [
        "data.num_train_tasks=32",
        "data.num_val_tasks=16",
        "data.num_test_tasks=32",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "model.hparams.channels=8",
        "model.hparams.num_layers=2",
    ]
    argv = ["ablate", "gp1d", "--model", "convcnp_approx", "--num-fixed-inputs", "0", "2"]
    assert main([*argv, "--out", str(tmp_path), *tiny]) == 0
    summary = json.loads((tmp_path / "ablation.json").read_text())
    assert [(r["value"], r["model"]) for r in summary["rows"]] == [
        (0, "convcnp"),
        (2, "convcnp_approx"),
    ]
    table = (tmp_path / "ablation.md").read_text()
    assert "| 0 | ConvCNP (T) |" in table and "| 2 | ConvCNP (T̃) |" in table
    assert "model.hparams.num_fixed_inputs=2" in table


def test_ablating_a_strict_model_is_refused(tmp_path, capsys):
    argv = ["ablate", "gp1d", "--model", "convcnp", "--p-drop", "0", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "has no fixed inputs to ablate" in capsys.readouterr().err


def reproduce_tiny_climate(tmp_path, years, *extra):
    """A one-epoch convcnp_approx run of ``aenp reproduce climate`` on ``tmp_path/t2m.nc``
    (west box for training, east for OOD); checks the splits and returns the run directory."""
    train, val, test = years
    argv = [
        "reproduce",
        "climate",
        "--data",
        str(tmp_path / "t2m.nc"),
        "--train-region",
        "30,50,-120,-100",
        "--ood-region",
        "30,50,-99,-80",
        "--out",
        str(tmp_path / "out"),
        "--models",
        "convcnp_approx",
        f"experiment.options.train_years=[{train}]",
        f"experiment.options.val_years=[{val}]",
        f"experiment.options.test_years=[{test}]",
        "experiment.options.patch=16",
        "data.num_train_tasks=16",
        "data.num_val_tasks=8",
        "data.num_test_tasks=8",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "model.hparams.channels=4",
        "model.hparams.num_layers=2",
        *extra,
    ]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {"test", "ood", "test_strict", "ood_strict"} <= set(summary["results"][0]["splits"])
    return tmp_path / "out" / "convcnp_approx" / "seed0"


def test_reproduce_climate_on_a_file_with_a_box_region(tmp_path):
    import numpy as np
    import xarray as xr

    lat, lon = np.arange(30.25, 50, 0.5), np.arange(-119.75, -80, 0.5)
    years = np.arange(2000, 2012)
    values = 280 + np.random.default_rng(0).standard_normal((len(years), len(lat), len(lon)))
    times = np.array([f"{y}-07-01" for y in years], dtype="datetime64[ns]")
    field = xr.DataArray(
        values, dims=("time", "lat", "lon"), coords={"time": times, "lat": lat, "lon": lon}
    )
    field.to_dataset(name="t2m").to_netcdf(tmp_path / "t2m.nc")
    run = reproduce_tiny_climate(tmp_path, ("2000,2007", "2008,2009", "2010,2011"))
    config = json.loads((run / "model/config.json").read_text())
    normalisation = config["metadata"]["normalisation"]
    assert normalisation["lon_origin"] == pytest.approx(-110.0)  # the box's centre
    assert normalisation["value_mean"] == pytest.approx(values[:8, :, :40].mean())
    unit = f"one unit is {values[:8, :, :40].std():.3g} of the data"
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert unit in markdown and "Spearman with elevation" in markdown
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    terrain = summary["departure_by_terrain"]["convcnp_approx"]
    assert set(terrain) == {"mean", "high", "low", "elevation", "slope"}
    assert (tmp_path / "out" / "maps.png").stat().st_size > 10_000


def test_climate_options_are_refused_for_other_experiments(tmp_path, capsys):
    assert main(["reproduce", "gp1d", "--data", "x.nc", "--out", str(tmp_path)]) == 2
    assert "--data apply to the climate experiment only" in capsys.readouterr().err


def test_reproduce_climate_in_four_dimensions_then_predict(tmp_path, capsys):
    import numpy as np
    import xarray as xr

    lat, lon = np.arange(30.25, 50, 0.5), np.arange(-119.75, -80, 0.5)
    years = np.arange(2000, 2020)
    rng = np.random.default_rng(0)
    values = 280 + rng.standard_normal((len(years), len(lat), len(lon)))
    orog = 1000 + 500 * rng.random((len(lat), len(lon)))
    times = np.array([f"{y}-07-01" for y in years], dtype="datetime64[ns]")
    data = xr.Dataset(
        {"t2m": (("time", "lat", "lon"), values), "orog": (("lat", "lon"), orog)},
        coords={"time": times, "lat": lat, "lon": lon},
    )
    data.to_netcdf(tmp_path / "t2m.nc")
    run = reproduce_tiny_climate(
        tmp_path,
        ("2000,2011", "2012,2015", "2016,2019"),
        "--dims",
        "4",
        "experiment.options.window=4",
    )
    config = json.loads((run / "model/config.json").read_text())
    assert config["dim_x"] == 4 and config["hparams"]["channel_inputs"] == 1
    # The file's own elevation, over the training box, sets the elevation units.
    normalisation = config["metadata"]["normalisation"]
    assert normalisation["elevation_origin"] == pytest.approx(orog[:, :40].mean())
    assert normalisation["elevation_scale"] == pytest.approx(orog[:, :40].std())
    data.isel(time=[-1]).to_netcdf(tmp_path / "context.nc")
    predict = ["predict", str(run), "--context", str(tmp_path / "context.nc")]
    predict += ["--targets", str(tmp_path / "context.nc"), "--out", str(tmp_path / "p.nc")]
    assert main([*predict, "--variable", "t2m"]) == 2  # no elevation given
    # The run recorded its training region (the box's cells) and years.
    elevation = ["--variable", "t2m", "--elevation", str(tmp_path / "t2m.nc")]
    with pytest.warns(
        ExtrapolationWarning, match="beyond the training longitudes -119.75 to -100.25"
    ):
        assert main([*predict, *elevation]) == 0
    with xr.open_dataset(tmp_path / "p.nc") as out:
        assert out["mean"].shape == (1, len(lat), len(lon))
        assert bool(np.isfinite(out["std"]).all())
    # ... and its cells of 0.5°: a 1° target grid is refused.
    data.isel(time=[-1], lat=slice(None, None, 2)).to_netcdf(tmp_path / "coarse.nc")
    coarse = [
        *predict[:4],
        "--targets",
        str(tmp_path / "coarse.nc"),
        "--out",
        str(tmp_path / "c.nc"),
    ]
    assert main([*coarse, *elevation]) == 2
    assert "latitude spacing is 1°, the training cells' 0.5°" in capsys.readouterr().err
    assert not (tmp_path / "c.nc").exists()


def test_elevation_needs_four_dimensions(tmp_path, capsys):
    argv = ["reproduce", "climate", "--elevation", "terrain", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "--elevation applies to --dims 4 only" in capsys.readouterr().err
