"""Evaluating a run: strict JSON records, written atomically."""

import json
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import aenp
import aenp.evaluate.run
from aenp.errors import InputError
from aenp.evaluate.metrics import FLOAT32_SETTINGS
from aenp.evaluate.run import METRICS_FILE, PER_TASK_FILE, evaluate_run, load_per_task_loglik
from aenp.files import json_safe, write_json
from aenp.models.neural_process import NeuralProcess
from aenp.run_directory import MODEL_DIR, RUN_CONFIG, RunDirectory
from tests.climate_fields import annual_field


def strict_json(text):
    """Parses JSON as strict readers do: NaN and Infinity are not JSON."""

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_become_null_at_any_depth(tmp_path):
    content = {"a": math.nan, "b": [1.5, math.inf, (-math.inf, 2)], "c": {"d": np.float64("nan")}}
    assert json_safe(content) == {"a": None, "b": [1.5, None, [None, 2]], "c": {"d": None}}
    path = write_json(tmp_path / "out.json", content)
    assert strict_json(path.read_text()) == json_safe(content)
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = write_json(tmp_path / "out.json", {"a": 1})
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})
    assert strict_json(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.fixture
def run_dir(tmp_path):
    """A climate run (gridded tasks: no context log-likelihood, so NaN) with an untrained model."""
    lat, lon, years = np.arange(30.25, 40, 0.5), np.arange(-109.75, -90, 0.5), np.arange(2000, 2008)
    year, la, lo = np.meshgrid(years, lat, lon, indexing="ij")
    field = annual_field(280 + np.sin(la) + np.cos(lo) + 0.1 * year, years, lat, lon)
    field.to_netcdf(tmp_path / "field.nc")
    options = {
        "data": str(tmp_path / "field.nc"),
        "train_region": "30,40,-110,-100",
        "ood_region": "30,40,-100,-90",
        "train_years": [2000, 2003],
        "val_years": [2004, 2005],
        "test_years": [2006, 2007],
        "patch": 8,
    }
    cfg = {
        "experiment": {"name": "climate", "options": options},
        "data": {"num_test_tasks": 3, "batch_size": 2},
    }
    run = tmp_path / "run"
    run.mkdir()
    OmegaConf.save(OmegaConf.create(cfg), run / RUN_CONFIG)
    torch.manual_seed(0)
    aenp.save(aenp.build_model("convcnp", 2, 1, channels=4, num_layers=1), run / MODEL_DIR)
    return run


def test_metrics_json_is_strict_json_with_null_for_missing_values(run_dir):
    results = evaluate_run(run_dir)
    written = strict_json((run_dir / METRICS_FILE).read_text())
    assert (written["model"], written["experiment"]) == ("convcnp", "climate")
    assert math.isnan(results["splits"]["test"]["context_loglik"]["mean"])
    assert written["splits"]["test"]["context_loglik"] == {
        "mean": None,
        "stderr": None,
        "num_tasks": 0,
    }
    assert written == json_safe(results)
    per_task = load_per_task_loglik(run_dir)
    assert set(per_task) == {"test", "ood"} and per_task["test"].shape == (3,)
    assert per_task["test"].mean() == pytest.approx(results["splits"]["test"]["loglik"]["mean"])
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        [METRICS_FILE, PER_TASK_FILE, RUN_CONFIG, MODEL_DIR]
    )


def test_evaluation_runs_on_the_gpu_where_there_is_one(run_dir, monkeypatch):
    asked = []

    def load_model(run, map_location="cpu"):
        asked.append(map_location)
        raise RuntimeError("stop before evaluating")

    monkeypatch.setattr(RunDirectory, "load_model", load_model)
    monkeypatch.setattr(aenp.evaluate.run, "available_device", lambda device, _: device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for device in ("auto", "cpu"):
        with pytest.raises(RuntimeError, match="stop before evaluating"):
            evaluate_run(run_dir, device=device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="stop before evaluating"):
        evaluate_run(run_dir)
    assert asked == ["cuda", "cpu", "cpu"]


def test_evaluating_on_a_device_this_machine_lacks_names_it_and_writes_nothing(run_dir):
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(InputError, match=r"device 'cuda:3' is not available.*device='cpu'"):
        evaluate_run(run_dir, device="cuda:3")
    with pytest.raises(InputError, match=r"device must name a device such as 'cpu'.*'gpu'"):
        evaluate_run(run_dir, device="gpu")
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_the_model_is_evaluated_in_full_float32_and_the_settings_restored(run_dir, monkeypatch):
    settings = FLOAT32_SETTINGS
    before = [setting.fp32_precision for setting in settings]
    seen = set()
    forward = NeuralProcess.forward

    def recording_forward(model, *args, **kwargs):
        seen.add(tuple(setting.fp32_precision for setting in settings))
        return forward(model, *args, **kwargs)

    monkeypatch.setattr(NeuralProcess, "forward", recording_forward)
    evaluate_run(run_dir, device="cpu")
    assert seen == {("ieee",) * len(settings)}
    assert [setting.fp32_precision for setting in settings] == before
