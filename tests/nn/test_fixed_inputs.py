import pytest
import torch

from aenp.models.registry import build_model
from aenp.nn.fixed_inputs import (
    FixedInputs,
    InjectionPoint,
    approximate,
    injection_sites,
    strictly_equivariant,
)


def make(**kwargs):
    module = FixedInputs(dim_x=2, width=5, **kwargs)
    torch.nn.init.normal_(module.projection.weight)
    return module


def test_projection_starts_at_zero():
    module = FixedInputs(dim_x=1, width=4)
    assert torch.count_nonzero(module(torch.randn(3, 7, 1))) == 0


def test_zero_outside_the_domain_and_not_inside():
    module = make(domain=[[-1.0, 1.0], [0.0, 2.0]])
    x = torch.tensor([[[0.0, 1.0], [1.5, 1.0], [0.0, -0.1], [-1.0, 2.0]]])
    out = module.eval()(x)
    assert out[0, 0].abs().sum() > 0 and out[0, 3].abs().sum() > 0
    assert torch.count_nonzero(out[0, 1:3]) == 0


def test_one_drop_flag_per_task_without_rescaling():
    module = make(p_drop=0.5).train()
    x = torch.randn(1, 6, 2).expand(400, 6, 2)
    out = module(x)
    reference = module.eval()(x[:1])
    dropped = out.abs().sum(dim=(1, 2)) == 0
    assert 120 < int(dropped.sum()) < 280
    torch.testing.assert_close(out[~dropped], reference.expand_as(out)[~dropped])


def test_shared_positions_are_broadcast_to_every_task():
    module = make().eval()
    out = module(torch.randn(1, 4, 3, 2), num_tasks=6)
    assert out.shape == (6, 4, 3, 5)
    torch.testing.assert_close(out[0], out[5])


def test_disabled_gives_zeros_of_the_right_shape():
    module = make()
    module.enabled = False
    out = module(torch.randn(1, 4, 2), num_tasks=3)
    assert out.shape == (3, 4, 5) and torch.count_nonzero(out) == 0


def test_a_dimension_without_bounds_is_ignored():
    module = make(domain=[[None, None], [0.0, 2.0]]).eval()
    x = torch.rand(1, 5, 2) * 2
    # Moving along the ignored dimension, even far outside any box, changes nothing.
    torch.testing.assert_close(module(x), module(x + torch.tensor([100.0, 0.0])))
    assert module(x).abs().min() > 0
    assert module(x + torch.tensor([0.0, 3.0])).abs().max() == 0


def test_eval_mode_never_drops():
    module = make(p_drop=0.99).eval()
    assert bool((module(torch.randn(50, 3, 2)).abs().sum(dim=(1, 2)) > 0).all())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_fixed_inputs": 0}, "num_fixed_inputs must be at least 1"),
        ({"p_drop": 1.5}, r"p_drop must lie in \[0, 1\]"),
        ({"domain": [[1.0, -1.0], [0.0, 1.0]]}, "low < high"),
        ({"domain": [[-1.0, 1.0]]}, r"2 \(low, high\) pair"),
        ({"domain": [[None, None], [None, None]]}, "not all"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FixedInputs(dim_x=2, width=3, **kwargs)


@pytest.mark.parametrize("domain", [[[-1.0, 1.0], [-1.0, 1.0]], []])
def test_approximate_names_a_domain_of_the_wrong_dimension(domain):
    model = build_model("convcnp", 1, 1, points_per_unit=8, channels=4, num_layers=1)
    with pytest.raises(
        ValueError,
        match=rf"one \(low, high\) pair per input dimension \(dim_x=1\), got {len(domain)}",
    ):
        approximate(model, domain=domain)
    assert model.backbone.fixed_inputs is None


def test_first_layer_hinges_are_spread_over_the_domain():
    """Each first-layer ReLU of ``t`` bends at its own random point of the scaled domain."""
    torch.manual_seed(0)
    first = next(m for m in FixedInputs(1, 8).basis.modules() if isinstance(m, torch.nn.Linear))
    hinges = -first.bias / first.weight[:, 0]  # where w x + b = 0
    assert bool(((hinges >= -1) & (hinges <= 1)).all())
    assert hinges.unique().numel() == first.out_features
    assert hinges.max() - hinges.min() > 1.0


class ShiftedFeatures(InjectionPoint):
    """The smallest backbone with an injection point: features ``x + fixed_inputs(x)``."""

    def __init__(self):
        super().__init__(position_dims=2, width=2)
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        h = self.scale * x
        return h if self.fixed_inputs is None else h + self.fixed_inputs(x)


def test_a_new_backbone_opts_in_by_subclassing_the_injection_point():
    model = approximate(ShiftedFeatures(), num_fixed_inputs=3, p_drop=0.0)
    assert injection_sites(model) == [model]
    assert model.fixed_inputs.dim_x == 2 and model.fixed_inputs.projection.out_features == 2
    torch.nn.init.normal_(model.fixed_inputs.projection.weight)
    x = torch.randn(4, 5, 2)
    assert (model(x) - x).abs().max() > 0
    with strictly_equivariant(model):
        torch.testing.assert_close(model(x), x)


def test_attributes_alone_do_not_make_an_injection_point():
    """The interface is the base class, not attribute names another module may happen to have."""
    lookalike = torch.nn.Linear(2, 2)
    lookalike.fixed_input_width, lookalike.fixed_inputs = 2, None
    with pytest.raises(ValueError, match=r"0 injection points.*subclasses .*InjectionPoint"):
        approximate(lookalike)


def test_fixed_inputs_keep_the_arguments_they_were_made_with():
    """Exactly as given: the domain buffer alone would round 0.1 to the default dtype."""
    module = FixedInputs(2, 3, num_fixed_inputs=2, domain=[(0.1, 1), (None, None)], hidden=[5])
    assert module.bounds == [[0.1, 1.0], [None, None]] and module.hidden == (5,)
    assert FixedInputs(1, 3).bounds is None


def test_the_site_of_a_convcnp_with_channel_inputs_is_its_gridded_inputs():
    model = build_model("convcnp", 2, 1, points_per_unit=8, channels=4, channel_inputs=1)
    (site,) = injection_sites(model)
    assert model.dim_x == 2 and site.grid_dims == site.position_dims == 1
    approximate(model, domain=[[-1.0, 1.0], [None, None]])
    assert site.fixed_inputs.dim_x == 1
    assert model.config["approximate"]["domain"] == [[-1.0, 1.0], [None, None]]
