from pathlib import Path

import pytest

from aenp.reproduce import SCALES, load_plan, train_overrides
from aenp.train.run import build_from_config, compose_config


@pytest.mark.parametrize("scale", SCALES)
def test_every_model_of_every_scale_composes_and_builds(scale):
    plan = load_plan("gp1d", scale)
    assert plan["models"] == ["tnp", "tetnp", "tetnp_approx", "convcnp", "convcnp_approx"]
    for key in plan["models"]:
        cfg = compose_config(train_overrides("gp1d", key, plan, Path("unused"), []))
        assert cfg.model.key == key
        build_from_config(cfg)


def test_quick_scale_keeps_approximate_and_strict_models_the_same_size():
    plan = load_plan("gp1d", "quick")
    for base in ("tetnp", "convcnp"):
        assert plan["model_overrides"][base] == plan["model_overrides"][base + "_approx"]


def test_unknown_scale_is_refused():
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        load_plan("gp1d", "huge")
