import math
import warnings

import numpy as np
import pytest
import torch

from aenp.nn.setconv import (
    COMPILED_WINDOW_MULTIPLE,
    DEFAULT_MAX_GRID_POINTS,
    DENSITY_EPS,
    TRUNCATION,
    TRUNCATION_RADIUS,
    WINDOW_MULTIPLE,
    SetConv,
    SetConvDecoder,
    SetConvEncoder,
    lattice_grid,
    widen_windows,
    window_width,
)

F64 = torch.float64


def axis_points(grid, d=0):
    """Absolute coordinates of the grid along axis ``d``."""
    return grid.absolute(torch.device("cpu")).axes[d]


def test_grid_lies_on_the_half_lattice_and_covers_the_data():
    x = torch.tensor([[[-1.23], [0.4]], [[2.71], [0.0]]], dtype=F64)
    grid = lattice_grid(x, points_per_unit=10, margin=0.1, multiple=8)
    axis = axis_points(grid).numpy()
    assert len(axis) % 8 == 0
    np.testing.assert_allclose(axis * 20, np.round(axis * 20), atol=1e-9)
    assert axis[0] <= -1.33 and axis[-1] >= 2.81
    np.testing.assert_allclose(np.diff(axis), 0.1, atol=1e-12)


def test_odd_padding_is_split_evenly_between_the_sides():
    """The lattice box [-14, 28] has 43 points; padded to 48 the grid stays centred on it."""
    x = torch.tensor([[[-1.33], [2.8]]], dtype=F64)
    grid = lattice_grid(x, points_per_unit=10, margin=0.0, multiple=8)
    axis = axis_points(grid)
    assert grid.shape == (48,) and grid.offset.tolist() == [0.5]
    torch.testing.assert_close(axis[0] + axis[-1], torch.tensor(1.4, dtype=F64))
    torch.testing.assert_close(axis[0], torch.tensor(-1.65, dtype=F64))


@pytest.mark.parametrize("multiple", [1, 4, 8])
def test_grid_moves_with_lattice_shifts_however_far(multiple):
    x = torch.rand(3, 5, 2, dtype=F64)
    a = lattice_grid(x, 16, 0.1, multiple)
    for cells in (9, -1, 2**20 + 3):
        b = lattice_grid(x + cells / 16, 16, 0.1, multiple)
        assert b.shape == a.shape and torch.equal(b.offset, a.offset)
        assert torch.equal(b.anchor, a.anchor + cells)
        torch.testing.assert_close(b.cells(x + cells / 16), a.cells(x), rtol=0, atol=1e-9)


@pytest.mark.parametrize("multiple", [1, 4, 8])
def test_grid_mirrors_and_turns_with_the_data(multiple):
    """Mirroring about the origin reverses every axis; a quarter turn swaps the axes."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = 3 * torch.rand(2, 6, 2, generator=generator, dtype=F64) - 1
        grid = lattice_grid(x, 8, 0.1, multiple)
        mirrored = lattice_grid(-x, 8, 0.1, multiple)
        turned = lattice_grid(torch.stack([-x[..., 1], x[..., 0]], dim=-1), 8, 0.1, multiple)
        assert mirrored.shape == grid.shape and turned.shape == grid.shape[::-1]
        for d in range(2):
            torch.testing.assert_close(axis_points(mirrored, d), -axis_points(grid, d).flip(0))
        torch.testing.assert_close(axis_points(turned, 0), -axis_points(grid, 1).flip(0))
        torch.testing.assert_close(axis_points(turned, 1), axis_points(grid, 0))


def test_grid_size_is_bounded_before_anything_is_allocated():
    x = torch.tensor([[[0.0], [1e5]]], dtype=F64)
    with pytest.raises(
        ValueError,
        match=r"span 1e\+05.*spacing 1/64 .*6,400,0\d\d points, more than max_grid_points = "
        r"4,194,304; rescale the inputs, lower points_per_unit, or raise max_grid_points",
    ):
        lattice_grid(x, 64, 0.1, 8)
    plane = torch.tensor([[[0.0, 0.0], [1e3, 1e3]]], dtype=F64)
    with pytest.raises(ValueError, match=r"span 1000 × 1000; .* 64,016 × 64,016 = 4,098,048,256"):
        lattice_grid(plane, 64, 0.1, 8)
    assert lattice_grid(x / 1e3, 64, 0.1, 8, max_points=DEFAULT_MAX_GRID_POINTS).shape == (6416,)
    with pytest.raises(ValueError, match="6,416 points, more than max_grid_points = 6,415"):
        lattice_grid(x / 1e3, 64, 0.1, 8, max_points=6415)


@pytest.mark.parametrize("far", [1e38, 1e300])
def test_inputs_beyond_the_lattice_are_refused(far):
    x = torch.full((1, 2, 1), far, dtype=torch.float32 if far < 1e39 else F64)
    with pytest.raises(ValueError, match=r"inputs \(xc and xt\) reach \|x\| = 1e\+\d+, beyond"):
        lattice_grid(x, 64, 0.1)


def test_float32_inputs_too_far_out_to_resolve_the_lattice_warn():
    near = torch.tensor([[[0.0], [1.0]]])
    with pytest.warns(
        UserWarning,
        match=r"^torch.float32 inputs reach \|x\| = 1e\+04, where they resolve positions to only "
        r"0.076 of a grid cell \(spacing 1/64\); predictions lose accuracy and exact lattice-shift "
        r"equivariance. Re-centre the inputs near the origin, or use float64.$",
    ):
        lattice_grid(near + 1e4, 64, 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lattice_grid(near.double() + 1e4, 64, 0.1)
        lattice_grid(near + 10, 64, 0.1)


@pytest.mark.parametrize("dim_x", [1, 2])
@pytest.mark.parametrize("isotropic", [False, True])
def test_encoder_matches_a_brute_force_sum(dim_x, isotropic):
    torch.manual_seed(0)
    xc = torch.rand(2, 4, dim_x, dtype=F64)
    yc = torch.randn(2, 4, 3, dtype=F64)
    encoder = SetConvEncoder(dim_x, init_lengthscale=0.3, isotropic=isotropic).double()
    with torch.no_grad():
        encoder.log_lengthscale.add_(torch.rand(encoder.log_lengthscale.shape, dtype=F64))
    grid = lattice_grid(xc, 8, 0.1, multiple=4)
    h = encoder(xc, yc, grid)
    lengthscale = encoder.log_lengthscale.exp().detach().numpy()
    points = grid.absolute(xc.device).points().reshape(-1, dim_x).numpy()
    for b in range(2):
        for i, g in enumerate(points):
            w = np.exp(-np.sum(((xc[b].numpy() - g) / lengthscale) ** 2, axis=1) / 2)
            density = w.sum()
            values = (w[:, None] * yc[b].numpy()).sum(0) / (density + 1e-8)
            np.testing.assert_allclose(
                h[b].reshape(-1, 4)[i].detach().numpy(), [density, *values], rtol=1e-10, atol=1e-12
            )


def test_decoder_matches_a_brute_force_sum():
    torch.manual_seed(0)
    xt = torch.rand(2, 5, 2, dtype=F64)
    grid = lattice_grid(xt, 4, 0.2, multiple=4)
    h = torch.randn(2, *grid.shape, 3, dtype=F64)
    decoder = SetConvDecoder(2, init_lengthscale=0.25).double()
    with torch.no_grad():
        decoder.log_lengthscale[1] = -1.0
    lengthscale = decoder.log_lengthscale.exp().detach().numpy()
    out = decoder(grid, h, xt).detach().numpy()
    points = grid.absolute(xt.device).points().reshape(-1, 2).numpy()
    for b in range(2):
        for t in range(5):
            w = np.exp(-np.sum(((points - xt[b, t].numpy()) / lengthscale) ** 2, axis=1) / 2)
            np.testing.assert_allclose(out[b, t], w @ h[b].reshape(-1, 3).numpy(), rtol=1e-10)


def test_isotropic_set_convolutions_share_one_lengthscale():
    assert SetConvEncoder(2, 0.3, isotropic=True).log_lengthscale.shape == (1,)
    assert SetConvEncoder(2, 0.3).log_lengthscale.shape == (2,)


def test_float32_module_reads_float64_positions_exactly_far_away():
    """Distances are taken in float64 before the float32 work: far shifts change nothing."""
    torch.manual_seed(0)
    xc, yc = torch.rand(2, 4, 1, dtype=F64), torch.randn(2, 4, 1)
    encoder = SetConvEncoder(1, init_lengthscale=0.3)
    shift = 1e6 + 5 / 16
    near = encoder(xc, yc, lattice_grid(xc, 16, 0.1))
    far = encoder(xc + shift, yc, lattice_grid(xc + shift, 16, 0.1))
    assert far.dtype == torch.float32
    torch.testing.assert_close(far, near, rtol=0, atol=1e-6)


def padded(x, valid, junk):
    """``x`` with the points past ``valid[b]`` of task ``b`` replaced by ``junk``, and the mask."""
    mask = torch.arange(x.shape[1]) < torch.tensor(valid)[:, None]
    return torch.where(mask[..., None], x, junk), mask


@pytest.mark.parametrize("junk", [1e30, -1e4, 5.0])
def test_grid_ignores_masked_out_points(junk):
    """Counted, the junk would be refused (1e30), warned about (float32 -1e4) or widen the grid."""
    x, mask = padded(3 * torch.rand(2, 6, 2) - 1, [4, 2], junk)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grid = lattice_grid(x, 16, 0.1, multiple=4, mask=mask)
    expected = lattice_grid(x[mask][None], 16, 0.1, multiple=4)
    assert grid.shape == expected.shape and torch.equal(grid.offset, expected.offset)
    assert torch.equal(grid.anchor, expected.anchor)


def test_grid_mask_is_checked():
    x = torch.rand(2, 3, 1)
    with pytest.raises(ValueError, match=r"mask must mark at least one point of x"):
        lattice_grid(x, 16, 0.1, mask=torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"shape \[batch, n\] = \[2, 3\] of x, got \[2, 1\]"):
        lattice_grid(x, 16, 0.1, mask=torch.ones(2, 1, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"mask must be a bool tensor, got dtype torch.float32"):
        lattice_grid(x, 16, 0.1, mask=torch.ones(2, 3))


def random_set_convolution(module, dim_x, isotropic, seed=0):
    """A float64 set convolution with random lengthscales of about 1.6 cells at 16 per unit."""
    torch.manual_seed(seed)
    conv = module(dim_x, init_lengthscale=0.1, isotropic=isotropic).double()
    with torch.no_grad():
        conv.log_lengthscale.add_(0.2 * torch.randn_like(conv.log_lengthscale))
    return conv


def narrow_grid(x, mask=None):
    """A grid wider than the set convolutions' windows along every axis (3-D: coarser)."""
    return lattice_grid(x, 16 if x.shape[-1] < 3 else 8, 0.5, multiple=2, mask=mask)


def assert_windows_are_narrower(conv, grid):
    """Guards the tests that compare banded and dense: the windows do not cover the grid."""
    assert conv.banded and all(w < n for w, n in zip(conv.window(grid), grid.shape, strict=True))


@pytest.mark.parametrize("dim_x", [1, 2])
@pytest.mark.parametrize("banded", [False, True])
def test_encoder_ignores_masked_out_context_points(dim_x, banded):
    """A padded task encodes as the task without its padding, whatever the padding holds."""
    valid = [5, 2]
    encoder = random_set_convolution(SetConvEncoder, dim_x, isotropic=False)
    encoder.banded = banded
    xc, mask = padded(4 * torch.rand(2, 7, dim_x, dtype=F64) - 2, valid, 1e6)
    yc, _ = padded(torch.randn(2, 7, 2, dtype=F64), valid, -1e6)
    grid = narrow_grid(xc, mask)
    h = encoder(xc, yc, grid, mask)
    for b, n in enumerate(valid):
        alone = encoder(xc[b : b + 1, :n], yc[b : b + 1, :n], grid)
        torch.testing.assert_close(h[b : b + 1], alone, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dim_x", [1, 2, 3])
@pytest.mark.parametrize("isotropic", [False, True])
def test_banded_weights_are_the_dense_weights_within_the_radius_and_zero_beyond(dim_x, isotropic):
    conv = random_set_convolution(SetConv, dim_x, isotropic)
    x = 4 * torch.rand(2, 5, dim_x, dtype=F64) - 2
    grid = narrow_grid(x)
    assert_windows_are_narrower(conv, grid)
    banded = conv.weights(grid.cells(x), grid)
    conv.banded = False
    dense = conv.weights(grid.cells(x), grid)
    lengthscale = conv.log_lengthscale.exp().expand(dim_x)
    for d, axis in enumerate(grid.absolute(x.device).axes):
        within = (x[..., d, None] - axis).abs() <= TRUNCATION_RADIUS * lengthscale[d]
        assert within.any(-1).all() and not within.all(-1).any()
        torch.testing.assert_close(banded[d], torch.where(within, dense[d], 0.0), rtol=0, atol=0)


def test_truncation_drops_weights_below_the_stated_tolerance():
    assert math.exp(-(TRUNCATION_RADIUS**2) / 2) == pytest.approx(TRUNCATION, rel=1e-9)
    assert TRUNCATION <= DENSITY_EPS * 1e-8


def test_window_width_is_a_rounded_multiple_covering_the_radius():
    """Widths change rarely as the lengthscale moves, and cover the axis when not smaller."""
    widths = [window_width(lengthscale, 1000) for lengthscale in (2.0, 2.1, 2.2)]
    assert widths == [40, 40, 40]
    for lengthscale in (0.3, 1.0, 2.7, 10.0):
        width = window_width(lengthscale, 1000)
        assert width % WINDOW_MULTIPLE == 0 and width >= 2 * TRUNCATION_RADIUS * lengthscale + 2
    assert [window_width(lengthscale, 30) for lengthscale in (2.0, math.inf, math.nan)] == [30] * 3


def test_compiled_windows_change_once_as_a_quick_convcnps_lengthscale_falls():
    # Each width is a recompilation of a compiled model: from the initial 2 cells to the 1.35
    # where the quick ConvCNPs end, multiples of 4 give four widths, those of a compiled model two.
    falling = np.linspace(2.0, 1.3, 71)
    assert len({window_width(length, 1000) for length in falling}) == 4
    widths = [window_width(length, 1000, COMPILED_WINDOW_MULTIPLE) for length in falling]
    assert sorted(set(widths)) == [32, 48]
    for length in (0.3, 1.0, 2.7):
        width = window_width(length, 1000, COMPILED_WINDOW_MULTIPLE)
        assert width % COMPILED_WINDOW_MULTIPLE == 0
        assert width >= 2 * TRUNCATION_RADIUS * length + 2


@pytest.mark.parametrize("module", [SetConvEncoder, SetConvDecoder])
def test_widened_windows_change_nothing_the_model_computes(module):
    conv = random_set_convolution(module, 2, isotropic=False)
    x = 4 * torch.rand(2, 5, 2, dtype=F64) - 2
    grid = narrow_grid(x)
    h = torch.randn(2, *grid.shape, 3, dtype=F64)
    results = []
    for multiple in (WINDOW_MULTIPLE, COMPILED_WINDOW_MULTIPLE):
        model = torch.nn.Sequential(conv)
        widen_windows(model, multiple)
        assert conv.window_multiple == multiple
        assert_windows_are_narrower(conv, grid)
        if module is SetConvEncoder:
            results.append(conv(x, torch.randn(2, 5, 1, dtype=F64, generator=seeded()), grid))
        else:
            results.append(conv(grid, h, x))
    windows = [conv.window(grid)]
    widen_windows(conv, WINDOW_MULTIPLE)
    assert conv.window(grid) != windows[0]  # the widths did differ
    assert torch.equal(*results)


def seeded():
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("dim_x", [1, 2, 3])
@pytest.mark.parametrize("isotropic", [False, True])
def test_banded_encoder_matches_dense_within_the_truncation_bound(dim_x, isotropic):
    """Masked contexts too; gradients (lengthscale, values) agree to the same relative level."""
    encoder = random_set_convolution(SetConvEncoder, dim_x, isotropic)
    nc = 6
    xc, mask = padded(4 * torch.rand(2, nc, dim_x, dtype=F64) - 2, [6, 4], 1e6)
    yc = torch.randn(2, nc, 2, dtype=F64, requires_grad=True)
    grid = narrow_grid(xc, mask)
    assert_windows_are_narrower(encoder, grid)
    cotangent = torch.randn(2, *grid.shape, 3, dtype=F64)
    results = []
    for banded in (True, False):
        encoder.banded = banded
        h = encoder(xc, yc, grid, mask)
        results.append(
            (h, *torch.autograd.grad((h * cotangent).sum(), [encoder.log_lengthscale, yc]))
        )
    (banded, *banded_grads), (dense, *dense_grads) = results
    error = (banded - dense).abs()
    assert error[..., 0].max() <= nc * TRUNCATION
    assert error[..., 1:].max() <= 2 * nc * yc.abs().max() * TRUNCATION / DENSITY_EPS
    for banded_grad, dense_grad in zip(banded_grads, dense_grads, strict=True):
        scale = dense_grad.abs().max()
        torch.testing.assert_close(banded_grad, dense_grad, rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("dim_x", [1, 2, 3])
@pytest.mark.parametrize("isotropic", [False, True])
def test_banded_decoder_matches_dense_within_the_truncation_bound(dim_x, isotropic):
    """Gradients (lengthscale, grid features) agree to the same level."""
    decoder = random_set_convolution(SetConvDecoder, dim_x, isotropic)
    xt = 4 * torch.rand(2, 6, dim_x, dtype=F64) - 2
    grid = narrow_grid(xt)
    assert_windows_are_narrower(decoder, grid)
    h = torch.randn(2, *grid.shape, 3, dtype=F64, requires_grad=True)
    cotangent = torch.randn(2, 6, 3, dtype=F64)
    results = []
    for banded in (True, False):
        decoder.banded = banded
        out = decoder(grid, h, xt)
        results.append(
            (out, *torch.autograd.grad((out * cotangent).sum(), [decoder.log_lengthscale, h]))
        )
    (banded, *banded_grads), (dense, *dense_grads) = results
    bound = math.prod(grid.shape) * TRUNCATION * h.abs().max()
    assert (banded - dense).abs().max() <= bound
    for banded_grad, dense_grad in zip(banded_grads, dense_grads, strict=True):
        torch.testing.assert_close(banded_grad, dense_grad, rtol=0, atol=1e-12)


def test_banded_encoder_turns_mirrors_and_shifts_with_the_data_exactly():
    """Windows start anywhere in the grid, yet the included points depend on distance only."""
    encoder = random_set_convolution(SetConvEncoder, 2, isotropic=True)
    xc, yc = 4 * torch.rand(2, 6, 2, dtype=F64) - 2, torch.randn(2, 6, 1, dtype=F64)
    grid = narrow_grid(xc)
    assert_windows_are_narrower(encoder, grid)
    h = encoder(xc, yc, grid)
    turned = torch.stack([-xc[..., 1], xc[..., 0]], dim=-1)
    for moved, expected in [
        (turned, h.transpose(1, 2).flip(1)),
        (-xc, h.flip(1, 2)),
        (xc + torch.tensor([5.0, -3.0], dtype=F64) / 16, h),
    ]:
        out = encoder(moved, yc, narrow_grid(moved))
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
