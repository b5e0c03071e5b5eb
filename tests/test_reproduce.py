from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from aenp.models.registry import model_name
from aenp.reproduce import PLAN_DIR, SCALES, load_plan, train_overrides
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
@pytest.mark.parametrize("experiment", sorted(p.stem for p in PLAN_DIR.glob("*.yaml")))
def test_every_plan_entry_builds_the_model_it_names_with_its_overrides(experiment, scale):
    plan = load_plan(experiment, scale)
    if experiment in PLANS:
        assert plan["models"] == PLANS[experiment]
    for key in plan["models"]:
        overrides = [*plan["overrides"], *plan["model_overrides"].get(key, [])]
        cfg = compose_config(train_overrides(experiment, key, plan, Path("runs/x"), ["seed=5"]))
        model = build_from_config(cfg)
        assert (cfg.run_dir, cfg.seed) == ("runs/x", 5)
        assert model_name(model) == key
        assert model.config["dim_x"] == cfg.experiment.dim_x
        built = {**model.config["hparams"], **model.config.get("approximate", {})}
        # A model's own override of a key replaces the plan's (the last one wins).
        final = {
            override.key_or_group: override.value()
            for override in OverridesParser.create().parse_overrides(overrides)
        }
        for name, value in final.items():
            assert OmegaConf.select(cfg, name) == value, (key, name)
            if name.startswith("model.hparams."):
                assert built[name.removeprefix("model.hparams.")] == value, (key, name)


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
