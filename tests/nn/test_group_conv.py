import pytest
import torch

from aenp.nn.group_conv import (
    D4,
    GroupConv,
    GroupConvNet,
    GroupUNet,
    LiftingConv,
    compose,
    inverse,
    pool_group,
    transform,
    transform_regular,
)

TOL = 1e-12


def test_transform_is_a_representation_of_d4():
    x = torch.arange(12.0).reshape(1, 3, 4)  # non-square: quarter turns give 4 × 3
    for a in D4:
        assert compose(a, inverse(a)) == (0, 0)
        for b in D4:
            assert torch.equal(transform(transform(x, b), a), transform(x, compose(a, b)))
    assert len({transform(x, g).flatten().tolist().__repr__() for g in D4}) == 8


def test_regular_action_is_a_representation():
    f = torch.randn(1, 2, 8, 5, 5, dtype=torch.float64)
    for a in D4:
        for b in D4:
            torch.testing.assert_close(
                transform_regular(transform_regular(f, b), a), transform_regular(f, compose(a, b))
            )


@pytest.mark.parametrize("g", D4)
def test_layers_are_equivariant_one_by_one(g):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    lift, conv = LiftingConv(3, 4, 3).double(), GroupConv(4, 5, 5).double()
    f = lift(x)
    assert (lift(transform(x, g)) - transform_regular(f, g)).abs().max() < TOL
    assert (conv(transform_regular(f, g)) - transform_regular(conv(f), g)).abs().max() < TOL
    assert (pool_group(transform_regular(f, g)) - transform(pool_group(f), g)).abs().max() < TOL


@pytest.mark.parametrize("network", [GroupConvNet, GroupUNet])
@pytest.mark.parametrize("g", D4)
def test_networks_are_equivariant_on_square_and_non_square_grids(network, g):
    torch.manual_seed(0)
    network = network(2, 3, 2, 3).double()
    for shape in [(8, 8), (4, 12)]:
        x = torch.randn(2, 3, *shape, dtype=torch.float64)
        assert (network(transform(x, g)) - transform(network(x), g)).abs().max() < TOL


def test_lifting_gives_distinct_responses_per_group_element():
    """Guards the tests above: the copies really are transformed, not identical."""
    torch.manual_seed(0)
    f = LiftingConv(1, 1, 3)(torch.randn(1, 1, 6, 6))
    assert (f[:, :, 0] - f[:, :, 1]).abs().max() > 1e-3


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="act on 2-D grids"):
        GroupConvNet(3, 2, 1, 3)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        GroupUNet(2, 2, 1, 4)
