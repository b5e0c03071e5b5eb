"""A run directory: its layout, and what it reads back of what was written to it."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import aenp
from aenp.errors import MissingFileError
from aenp.models.io import load_config
from aenp.run_directory import RunDirectory, model_directory


def test_the_layout_of_existing_run_directories_is_kept(tmp_path):
    run = RunDirectory(str(tmp_path))
    assert run.path == tmp_path
    layout = {
        run.config_path: "config.yaml",
        run.model_path: "model",
        run.training_record_path: "training.json",
        run.log_dir: "logs",
        run.checkpoint_dir: "checkpoints",
        run.last_checkpoint: "checkpoints/last.ckpt",
        run.metrics_path: "metrics.json",
        run.per_task_path: "per_task_loglik.npz",
        run.train_log_path: "train.log",
        run.evaluate_log_path: "evaluate.log",
    }
    assert {path: str(path.relative_to(tmp_path)) for path in layout} == layout


def test_a_new_directory_holds_no_run(tmp_path):
    run = RunDirectory(tmp_path / "new")
    assert run.recorded_config() is None
    assert run.training_record() == {}
    assert run.training_log() == []
    assert not run.is_trained()
    with pytest.raises(MissingFileError) as error:
        run.config()
    assert str(error.value) == (
        f"{run.path} is not a training run: {run.path / 'config.yaml'} does not exist"
    )


def test_the_recorded_config_is_the_finished_one_else_the_started_one(tmp_path):
    run = RunDirectory(tmp_path / "run")
    started = OmegaConf.create({"seed": 3, "lr": "${seed}"})
    run.write_config(started)
    assert run.recorded_config() == {"seed": 3, "lr": 3}  # written resolved
    assert OmegaConf.to_container(run.config()) == {"seed": 3, "lr": 3}
    run.write_training_record(12.5, {"seed": 4})
    assert run.recorded_config() == {"seed": 4}
    assert run.training_record() == {"seconds": 12.5, "config": {"seed": 4}}
    assert not run.is_trained()  # no model yet
    run.save_model(aenp.build_model("convcnp", 1, 1, channels=4, num_layers=1), {})
    assert run.is_trained()


def test_training_logs_are_read_in_the_order_of_the_restarts(tmp_path):
    run = RunDirectory(tmp_path)
    for version in (10, 2):
        (run.log_dir / f"version_{version}").mkdir(parents=True)
        (run.log_dir / f"version_{version}" / "metrics.csv").write_text(f"step\n{version}\n")
    assert [row["step"] for row in run.training_log()] == ["2", "10"]


def test_saved_model_and_results_read_back_exactly(tmp_path):
    run = RunDirectory(tmp_path)
    torch.manual_seed(0)
    model = aenp.build_model("convcnp_approx", 1, 1, channels=4, num_layers=1)
    run.save_model(model, {"experiment": "gp1d"})
    loaded = run.load_model()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)
    assert load_config(run.model_path)["metadata"] == {"experiment": "gp1d"}
    per_task = {"test": np.arange(3.0), "test_strict": np.ones(3)}
    with pytest.raises(MissingFileError, match=f"{run.path} holds no evaluation: .*metrics.json"):
        run.results()
    nothing = {"mean": float("nan"), "stderr": float("nan"), "num_tasks": 3}
    metrics = {
        "model": "convcnp_approx",
        "splits": {
            "test": {"loglik": {"mean": 1.25, "stderr": 0.5, "num_tasks": 3}, "gap": nothing},
            "test_strict": {"loglik": {"mean": -2.0, "stderr": float("inf"), "num_tasks": 3}},
        },
    }
    run.write_results(metrics, per_task)
    assert '"stderr": null' in run.metrics_path.read_text()  # strict JSON
    results = run.results()
    assert results["splits"]["test"]["loglik"] == metrics["splits"]["test"]["loglik"]
    for figures in (results["splits"]["test"]["gap"], results["splits"]["test_strict"]["loglik"]):
        assert np.isnan(figures["stderr"])
    assert np.isnan(results["splits"]["test"]["gap"]["mean"])
    assert results["splits"]["test_strict"]["loglik"]["mean"] == -2.0
    read = run.per_task_loglik()
    assert read.keys() == per_task.keys()
    for split, values in per_task.items():
        np.testing.assert_array_equal(read[split], values)


def test_model_directory_finds_the_model_of_a_run(tmp_path):
    assert model_directory(tmp_path) == tmp_path  # a model directory itself
    RunDirectory(tmp_path).model_path.mkdir()
    assert model_directory(tmp_path) == tmp_path / "model"


def test_old_import_paths_give_the_same_objects():
    import aenp.evaluate.run
    import aenp.reproduce
    import aenp.run_directory as new
    import aenp.train.run

    for name in ("MODEL_DIR", "RUN_CONFIG", "TRAINING_RECORD", "LOG_DIR", "CHECKPOINT_DIR"):
        assert getattr(aenp.train.run, name) == getattr(new, name)
    assert aenp.train.run.BEST_CHECKPOINT == new.BEST_CHECKPOINT
    assert aenp.train.run.LAST_CHECKPOINT == new.LAST_CHECKPOINT
    assert aenp.train.run.experiment_from_config is new.experiment_from_config
    assert aenp.evaluate.run.METRICS_FILE == new.METRICS_FILE
    assert aenp.evaluate.run.PER_TASK_FILE == new.PER_TASK_FILE
    assert aenp.reproduce.TRAIN_LOG == new.TRAIN_LOG
