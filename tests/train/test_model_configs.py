import pytest
import torch
from omegaconf import OmegaConf

from aenp.models.registry import MODEL_SPECS, build_model, model_keys
from aenp.train.model_configs import LEFT_TO_BUILDERS
from aenp.train.run import build_from_config, compose_config


@pytest.mark.parametrize("key", model_keys())
def test_composed_model_config_is_the_builders_defaults(key):
    experiment = "smoke2d" if key.startswith("equivcnp") else "gp1d"
    cfg = compose_config([f"experiment={experiment}", f"model={key}"])
    hparams = OmegaConf.to_container(cfg.model.hparams, resolve=True)
    expected = {
        name: list(value) if isinstance(value, tuple) else value
        for name, value in MODEL_SPECS[key].default_hparams().items()
        if name not in LEFT_TO_BUILDERS
    }
    if "domain" in expected:  # fixed inputs cover the experiment's training region
        expected["domain"] = OmegaConf.to_container(cfg.experiment.domain)
    assert cfg.model.key == key
    assert hparams == expected
    # And so the configured model is the one build_model makes by default.
    dims = cfg.experiment.dim_x, cfg.experiment.dim_y
    domain = {name: hparams[name] for name in hparams.keys() & {"domain"}}
    with torch.device("meta"):
        configured = build_from_config(cfg).state_dict()
        default = build_model(key, *dims, **domain).state_dict()
    assert {k: v.shape for k, v in configured.items()} == {k: v.shape for k, v in default.items()}


def test_model_config_keeps_the_options_earlier_runs_recorded():
    """A run resumes only under an unchanged config, so no option may appear or move."""
    hparams = compose_config(["model=convcnp_approx"]).model.hparams
    assert list(hparams) == [
        "points_per_unit",
        "margin",
        "cnn",
        "channels",
        "num_layers",
        "kernel_size",
        "channel_inputs",
        "min_std",
        "num_fixed_inputs",
        "p_drop",
        "domain",
    ]
    assert OmegaConf.to_yaml(hparams).endswith("domain: ${experiment.domain}\n")


def test_options_left_to_the_builders_can_be_added():
    cfg = compose_config(["model=convcnp", "+model.hparams.max_grid_points=4096"])
    with torch.device("meta"):
        assert build_from_config(cfg).backbone.max_grid_points == 4096
    with pytest.raises(Exception, match="max_grid_points"):
        compose_config(["model=convcnp", "model.hparams.max_grid_points=4096"])
