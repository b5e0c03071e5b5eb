"""Exact symmetries of the convolutional models on point sets (off the grid), in float64.

The EquivCNP is exactly equivariant to the symmetry group of its lattice: lattice translations
and the 8 rotations and reflections of D4 about any lattice point or cell centre. Far lattice
shifts leave a float32 model given float64 positions unchanged, and grids too large to build
are refused before anything is allocated. The set convolutions are banded with a short
truncation radius, so that their windows are narrower than these small grids and start and end
anywhere in them: exactness does not depend on the radius.
"""

import pytest
import torch

import aenp
from aenp.batch import Batch
from aenp.nn import setconv
from aenp.nn.fixed_inputs import FixedInputs
from aenp.nn.group_conv import D4
from aenp.nn.setconv import SetConv, SetConvEncoder, lattice_grid
from aenp.testing import (
    assert_equivariant,
    dihedral_points,
    equivariance_error,
    random_batch,
    translation,
)

PPU = 4
SMALL = {
    "convcnp": {"points_per_unit": PPU, "channels": 6, "num_layers": 3},
    "equivcnp": {"points_per_unit": PPU, "channels": 2, "num_layers": 2, "kernel_size": 3},
}
APPROX = {"num_fixed_inputs": 2, "domain": [[-3.0, 3.0], [-3.0, 3.0]]}
F64 = torch.float64
SEEDS = range(4)
SHORT_RADIUS = 1.0


@pytest.fixture(autouse=True)
def short_radius(monkeypatch):
    monkeypatch.setattr(setconv, "TRUNCATION_RADIUS", SHORT_RADIUS)


def build(key, dtype=F64, dim_x=2, **hparams):
    """A small model whose set-conv lengthscales and fixed inputs are random, as after training."""
    torch.manual_seed(0)
    base = key.removesuffix("_approx")
    approx = APPROX if key.endswith("_approx") else {}
    model = aenp.build_model(key, dim_x, 1, **SMALL[base], **approx, **hparams).to(dtype).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, SetConv):
                module.log_lengthscale.add_(0.3 * torch.randn_like(module.log_lengthscale))
            if isinstance(module, FixedInputs):
                torch.nn.init.normal_(module.projection.weight)
    return model


def point_tasks(seed):
    """Two 2-D tasks in a random box, so the grid's extent (and padding) varies with the seed."""
    generator = torch.Generator().manual_seed(seed)
    low = -2 * torch.rand(2, generator=generator, dtype=F64)
    size = 0.5 + 3 * torch.rand(2, generator=generator, dtype=F64)

    def uniform(n):
        return low + size * torch.rand(2, n, 2, generator=generator, dtype=F64)

    xc, xt = uniform(7), uniform(9)
    return Batch(xc, torch.randn(2, 7, 1, generator=generator, dtype=F64), xt)


def compose(*transforms):
    """The transform applying ``transforms`` from left to right."""

    def composed(batch):
        for transform in transforms:
            batch = transform(batch)
        return batch

    return composed


def about(centre, g):
    """The D4 element ``g`` about ``centre`` rather than the origin."""
    centre = torch.tensor(centre, dtype=F64) / PPU
    return compose(translation(-centre), dihedral_points(g), translation(centre))


def test_tasks_need_every_kind_of_padding():
    """Guards the tests below: each axis of the grid lies on the lattice or midway between."""
    offsets = set()
    for seed in SEEDS:
        batch = point_tasks(seed)
        grid = lattice_grid(torch.cat([batch.xc, batch.xt], dim=1), PPU, 0.1, multiple=4)
        offsets.add(tuple(grid.offset.tolist()))
    assert offsets == {(0.0, 0.0), (0.0, 0.5), (0.5, 0.0), (0.5, 0.5)}


@pytest.mark.parametrize("key", ["convcnp", "equivcnp"])
def test_set_convolution_windows_are_narrower_than_the_grids(key):
    """Guards the tests below: they exercise banded windows, not whole axes, mostly."""
    encoder = next(m for m in build(key).modules() if isinstance(m, SetConvEncoder))
    narrower = []
    for seed in SEEDS:
        batch = point_tasks(seed)
        grid = lattice_grid(torch.cat([batch.xc, batch.xt], dim=1), PPU, 0.1, multiple=4)
        narrower += [w < size for w, size in zip(encoder.window(grid), grid.shape, strict=True)]
    assert encoder.banded and sum(narrower) > len(narrower) / 2


@pytest.mark.parametrize("g", D4)
def test_equivcnp_is_d4_equivariant_on_point_sets(g):
    model = build("equivcnp")
    for seed in SEEDS:
        assert_equivariant(model, point_tasks(seed), dihedral_points(g))


@pytest.mark.parametrize("g", D4[1:])
def test_equivcnp_is_equivariant_about_lattice_points_and_cell_centres(g):
    model = build("equivcnp")
    lattice_shift = translation(torch.tensor([7.0, -3.0], dtype=F64) / PPU)
    for seed, centre in zip(SEEDS, [(1, 0), (-3, 2), (0.5, 0.5), (1.5, -2.5)], strict=True):
        assert_equivariant(model, point_tasks(seed), compose(about(centre, g), lattice_shift))


def test_equivcnp_is_not_equivariant_about_other_points():
    """Guards the tests above: turning about a quarter cell moves the data off the lattice."""
    model, batch = build("equivcnp"), point_tasks(0)
    assert equivariance_error(model, batch, about((0.25, 0), (1, 0))) > 1e-6


def test_equivcnp_set_convolutions_are_isotropic():
    """One lengthscale per set convolution: a quarter turn swaps the axes."""
    lengthscales = [
        m.log_lengthscale for m in build("equivcnp").modules() if isinstance(m, SetConv)
    ]
    assert lengthscales and all(p.shape == (1,) for p in lengthscales)


def test_equivcnp_approx_is_d4_equivariant_only_with_fixed_inputs_zeroed():
    model = build("equivcnp_approx")
    for seed, g in enumerate([(1, 0), (0, 1)]):
        assert equivariance_error(model, point_tasks(seed), dihedral_points(g)) > 1e-3
    with aenp.strictly_equivariant(model):
        for i, g in enumerate(D4):
            batch = point_tasks(i % len(SEEDS))
            assert_equivariant(model, batch, compose(about((1, 2), g), translation(0.75)))


def test_unet_convcnp_is_exact_for_every_single_cell_shift():
    """Shifts by any number of cells, not only multiples of the U-Net's 2**3, are exact."""
    model = build("convcnp")
    for cells in range(1, 9):
        shift = translation(torch.tensor([cells, 1 - cells], dtype=F64) / PPU)
        assert_equivariant(model, point_tasks(cells % len(SEEDS)), shift)


@pytest.mark.parametrize("key", ["convcnp", "equivcnp"])
def test_float32_model_with_float64_positions_is_exact_however_far(key):
    model = build(key, dtype=torch.float32)
    batch = point_tasks(0)  # float64
    near = model(batch)
    assert near.mean.dtype == torch.float32
    for shift in (1e4 + 3 / PPU, -1e6 + 1 / PPU, 1e8):
        far = model(batch.shift(shift))
        torch.testing.assert_close(far.mean, near.mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(far.stddev, near.stddev, rtol=1e-6, atol=1e-6)


def test_float32_positions_far_out_warn_and_lose_exactness():
    """Guards the test above: float32 positions a million units out are rounded visibly."""
    model = build("convcnp", dtype=torch.float32)
    batch = point_tasks(0).to(torch.float32)
    with pytest.warns(UserWarning, match=r"float32 inputs reach .* of a grid cell"):
        assert equivariance_error(model, batch, translation(1e6)) > 1e-2


def test_grids_beyond_max_grid_points_are_refused():
    batch = random_batch(dim_x=2, dtype=F64)  # spans [-2, 2]²: a 24 × 24 grid at PPU = 4
    model = build("convcnp", max_grid_points=576)
    model(batch)
    with pytest.raises(
        ValueError, match=r"24 × 32 = 768 points, more than max_grid_points = 576; rescale"
    ):
        model(Batch(batch.xc, batch.yc, batch.xt * torch.tensor([1.0, 1.5], dtype=F64)))


@pytest.mark.parametrize("key", ["convcnp", "equivcnp"])
def test_points_far_apart_are_refused_without_allocating(key):
    xc, yc = torch.zeros(1, 3, 2), torch.zeros(1, 3, 1)
    model = build(key, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"span 1000 × 1000; .*more than max_grid_points"):
        model(xc, yc, torch.full((1, 1, 2), 1e3))
    with pytest.raises(ValueError, match=r"inputs \(xc and xt\) reach \|x\| = 1e\+38"):
        model(xc, yc, torch.full((1, 1, 2), 1e38))
