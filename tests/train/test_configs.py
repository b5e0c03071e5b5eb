from pathlib import Path

import pytest
import torch

from aenp.models.registry import model_keys
from aenp.testing import random_batch
from aenp.train.run import CONFIG_DIR, build_from_config, compose_config

MODEL_CONFIGS = model_keys()
EXPERIMENT_CONFIGS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def test_configs_exist_for_the_design_experiments():
    assert {"gp1d", "smoke2d"} <= set(EXPERIMENT_CONFIGS)


@pytest.mark.parametrize("experiment", EXPERIMENT_CONFIGS)
@pytest.mark.parametrize("model", MODEL_CONFIGS)
def test_every_config_composes_and_builds(experiment, model):
    cfg = compose_config([f"experiment={experiment}", f"model={model}"])
    assert cfg.model.key == model
    # Lattice density and width change no shape, only the cost (test_model_configs checks the
    # default sizes): models of 2-D and 3-D experiments see gridded tasks, so a default-density
    # lattice over random points is large (in 3-D too large), and a six-level 3-D U-Net pads
    # each axis to 64 cells, where 64 channels take seconds.
    if cfg.experiment.dim_x >= 2 and "points_per_unit" in cfg.model.hparams:
        cfg.model.hparams.points_per_unit = 4
    if cfg.experiment.dim_x >= 3 and "channels" in cfg.model.hparams:
        cfg.model.hparams.channels = 8
    if cfg.experiment.dim_x == 4 and "channel_inputs" in cfg.model.hparams:
        # Convolutions stop at three grid dimensions: elevation enters as a data channel.
        with pytest.raises(ValueError, match="with channel_inputs"):
            build_from_config(cfg)
        cfg.model.hparams.channel_inputs = 1
    if model.startswith("equivcnp") and cfg.experiment.dim_x != 2:
        with pytest.raises(ValueError, match="2-D inputs"):
            build_from_config(cfg)
        return
    net = build_from_config(cfg).eval()
    pred = net(random_batch(num_context=5, num_target=6, dim_x=cfg.experiment.dim_x))
    assert pred.mean.shape == (3, 6, 1) and bool(torch.isfinite(pred.mean).all())


def test_approximate_configs_take_the_experiment_domain():
    cfg = compose_config(["experiment=gp1d", "model=convcnp_approx"])
    assert list(cfg.model.hparams.domain) == list(cfg.experiment.domain)
    assert build_from_config(cfg).backbone.fixed_inputs.domain.tolist() == [[-4.0, 4.0]]


def test_unknown_model_config_is_refused():
    with pytest.raises(Exception, match="gnp"):
        compose_config(["model=gnp"])


def test_run_dir_defaults_to_experiment_model_and_seed():
    assert Path(compose_config(["model=tetnp"]).run_dir) == Path("runs/gp1d/tetnp/seed0")
    assert Path(compose_config(["model=tetnp", "seed=3"]).run_dir) == Path("runs/gp1d/tetnp/seed3")


def test_unknown_experiment_is_refused_with_the_available_ones():
    from aenp.data.experiments import get_experiment

    with pytest.raises(ValueError, match=r"unknown experiment 'weather'; available: gp1d"):
        get_experiment("weather")
    with pytest.raises(Exception, match="weather"):
        compose_config(["experiment=weather"])


def test_experiment_settings_override_the_training_defaults():
    cfg = compose_config(["experiment=gp1d"])
    assert cfg.trainer.max_epochs == 200
    assert compose_config(["trainer.max_epochs=3"]).trainer.max_epochs == 3
