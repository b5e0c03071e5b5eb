from pathlib import Path

import pytest

from aenp.reproduce import SCALES, load_plan, train_overrides
from aenp.train.run import build_from_config, compose_config

PLANS = {
    "gp1d": ["tnp", "tetnp", "tetnp_approx", "convcnp", "convcnp_approx"],
    "smoke2d": [
        "pttnp",
        "tepttnp",
        "tepttnp_approx",
        "convcnp",
        "convcnp_approx",
        "relaxed_convcnp",
        "equivcnp",
        "equivcnp_approx",
    ],
}


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("experiment", list(PLANS))
def test_every_model_of_every_scale_composes_and_builds(experiment, scale):
    plan = load_plan(experiment, scale)
    assert plan["models"] == PLANS[experiment]
    for key in plan["models"]:
        cfg = compose_config(train_overrides(experiment, key, plan, Path("unused"), []))
        assert cfg.model.key == key
        build_from_config(cfg)


@pytest.mark.parametrize("experiment", list(PLANS))
def test_quick_scale_keeps_approximate_and_strict_models_the_same_size(experiment):
    plan = load_plan(experiment, "quick")
    for key in plan["models"]:
        if key.endswith("_approx"):
            base = key.removesuffix("_approx")
            assert plan["model_overrides"][base] == plan["model_overrides"][key]


def test_unknown_scale_is_refused():
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        load_plan("gp1d", "huge")
