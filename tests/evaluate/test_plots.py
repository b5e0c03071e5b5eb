import torch

import aenp
from aenp.data.experiments import EvaluationBatch
from aenp.evaluate.plots import departure_map, plot_departure_2d, plot_maps_2d
from aenp.nn.fixed_inputs import FixedInputs
from aenp.testing import random_grid_batch

SMALL = {"channels": 4, "num_layers": 2}


def approx(domain):
    torch.manual_seed(0)
    model = aenp.build_model("convcnp_approx", 2, 1, domain=domain, **SMALL).double()
    return model


def randomise(model):
    for module in model.modules():
        if isinstance(module, FixedInputs):
            torch.nn.init.normal_(module.projection.weight)
    return model


def items():
    return [EvaluationBatch(random_grid_batch(dtype=torch.float64))]


def test_departure_map_is_zero_for_a_model_equal_to_its_strict_self():
    assert departure_map(approx([[-1.0, 1.0], [-1.0, 1.0]]), items()).abs().max() == 0


def test_departure_map_shows_where_fixed_inputs_act():
    model = randomise(approx([[-1.0, 1.0], [-1.0, 1.0]]))
    departure = departure_map(model, items())
    assert departure.shape == (8, 8) and bool((departure > 0).all())


def test_departure_map_vanishes_when_the_grid_lies_outside_the_domain():
    model = randomise(approx([[5.0, 6.0], [5.0, 6.0]]))
    assert departure_map(model, items()).abs().max() == 0


def test_maps_are_drawn_for_point_set_and_grid_models(tmp_path):
    torch.manual_seed(0)
    models = {
        "convcnp_approx": randomise(approx([[-1.0, 1.0], [-1.0, 1.0]])),
        "pttnp": aenp.build_model(
            "pttnp", 2, 1, embed_dim=8, num_heads=2, num_layers=1, ff_dim=8, num_pseudo_tokens=2
        ).double(),
    }
    assert plot_maps_2d(models, items()[0], tmp_path / "maps.png").stat().st_size > 10_000
    assert plot_departure_2d(models, items(), tmp_path / "departure.png").is_file()
