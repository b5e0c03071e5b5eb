"""RelaxedConvCNP: relaxed convolutions whose bank weights come from fixed inputs."""

import torch

import aenp
from aenp.nn.cnn import ConvNet
from aenp.nn.fixed_inputs import FixedInputs
from aenp.testing import assert_equivariant, equivariance_error, random_batch, translation

SMALL = {"points_per_unit": 8, "channels": 4, "num_layers": 2, "kernel_size": 3, "num_banks": 3}


def build(dtype=torch.float64, **kwargs):
    torch.manual_seed(0)
    return aenp.build_model("relaxed_convcnp", 1, 1, **SMALL, **kwargs).to(dtype).eval()


def ordinary_convcnp_with_mean_filters(relaxed):
    """An ordinary ConvCNP whose convolutions are the means of the relaxed banks."""
    ordinary = aenp.build_model(
        "convcnp", 1, 1, cnn="conv", points_per_unit=8, channels=4, num_layers=2, kernel_size=3
    )
    ordinary = ordinary.double().eval()
    state = {
        k: v for k, v in relaxed.state_dict().items() if "cnn" not in k and "fixed_inputs" not in k
    }
    ordinary.load_state_dict(state, strict=False)
    banks = SMALL["num_banks"]
    for plain, relaxed_conv in zip(
        ordinary.backbone.cnn.layers, relaxed.backbone.cnn.layers, strict=True
    ):
        weight = relaxed_conv.conv.weight.unflatten(0, (banks, -1)).mean(0)
        bias = relaxed_conv.conv.bias.unflatten(0, (banks, -1)).mean(0)
        plain.weight.data.copy_(weight)
        plain.bias.data.copy_(bias)
    assert isinstance(ordinary.backbone.cnn, ConvNet)
    return ordinary


def test_uniform_weights_give_an_ordinary_convcnp():
    relaxed = build()  # the fixed-input projection starts at zero: uniform weights
    ordinary = ordinary_convcnp_with_mean_filters(relaxed)
    batch = random_batch(dtype=torch.float64)
    torch.testing.assert_close(relaxed(batch).mean, ordinary(batch).mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        relaxed(batch).stddev, ordinary(batch).stddev, rtol=1e-12, atol=1e-12
    )


def test_position_dependent_weights_break_equivariance_until_zeroed():
    model, batch = build(domain=[[-3.0, 3.0]]), random_batch(dtype=torch.float64)
    lattice_shift = translation(5 / SMALL["points_per_unit"])
    assert_equivariant(model, batch, lattice_shift)  # uniform at initialisation
    for module in model.modules():
        if isinstance(module, FixedInputs):
            torch.nn.init.normal_(module.projection.weight, std=0.1)
    assert equivariance_error(model, batch, lattice_shift) > 1e-4
    with aenp.strictly_equivariant(model):
        assert_equivariant(model, batch, lattice_shift)


def test_relaxed_convcnp_round_trips_and_keeps_its_name(tmp_path):
    model = build(dtype=torch.float32, p_drop=0.25)
    assert aenp.model_name(model) == "relaxed_convcnp"
    aenp.save(model, tmp_path)
    loaded = aenp.load(tmp_path)
    assert aenp.model_name(loaded) == "relaxed_convcnp"
    assert loaded.backbone.fixed_inputs.p_drop == 0.25
    batch = random_batch()
    torch.testing.assert_close(loaded(batch).mean, model(batch).mean, rtol=0, atol=0)
