import numpy as np
import pytest
import torch

from aenp.nn.cnn import ConvNet, UNet
from aenp.nn.setconv import SetConvDecoder, SetConvEncoder, lattice_grid


def test_grid_lies_on_the_lattice_and_covers_the_data():
    x = torch.tensor([[[-1.23], [0.4]], [[2.71], [0.0]]], dtype=torch.float64)
    grid = lattice_grid(x, points_per_unit=10, margin=0.1, multiple=8)
    (axis,) = grid.axes
    assert len(axis) % 8 == 0
    np.testing.assert_allclose((axis * 10).numpy(), np.round(axis.numpy() * 10), atol=1e-9)
    assert axis[0] <= -1.33 and axis[-1] >= 2.81
    np.testing.assert_allclose(np.diff(axis.numpy()), 0.1, atol=1e-12)


def test_grid_moves_with_lattice_shifts():
    x = torch.rand(3, 5, 2, dtype=torch.float64)
    a = lattice_grid(x, 16, 0.1, 4)
    b = lattice_grid(x + 9 / 16, 16, 0.1, 4)
    assert a.shape == b.shape
    for axis_a, axis_b in zip(a.axes, b.axes, strict=True):
        torch.testing.assert_close(axis_b, axis_a + 9 / 16)


@pytest.mark.parametrize("dim_x", [1, 2])
def test_encoder_matches_a_brute_force_sum(dim_x):
    torch.manual_seed(0)
    xc = torch.rand(2, 4, dim_x, dtype=torch.float64)
    yc = torch.randn(2, 4, 3, dtype=torch.float64)
    encoder = SetConvEncoder(dim_x, init_lengthscale=0.3).double()
    grid = lattice_grid(xc, 8, 0.1)
    h = encoder(xc, yc, grid)
    lengthscale = encoder.log_lengthscale.exp().detach().numpy()
    points = grid.points().reshape(-1, dim_x).numpy()
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
    xt = torch.rand(2, 5, 2, dtype=torch.float64)
    grid = lattice_grid(xt, 4, 0.2)
    h = torch.randn(2, *grid.shape, 3, dtype=torch.float64)
    decoder = SetConvDecoder(2, init_lengthscale=0.25).double()
    lengthscale = decoder.log_lengthscale.exp().detach().numpy()
    out = decoder(grid, h, xt).detach().numpy()
    points = grid.points().reshape(-1, 2).numpy()
    for b in range(2):
        for t in range(5):
            w = np.exp(-np.sum(((points - xt[b, t].numpy()) / lengthscale) ** 2, axis=1) / 2)
            np.testing.assert_allclose(out[b, t], w @ h[b].reshape(-1, 3).numpy(), rtol=1e-10)


@pytest.mark.parametrize("cnn", [UNet(2, 4, 2, 3), ConvNet(2, 4, 2, 3)])
def test_cnns_keep_the_grid_shape(cnn):
    h = torch.randn(1, 4, 16, 12)
    assert cnn(h).shape == h.shape


def test_cnn_arguments_are_checked():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        UNet(1, 4, 2, 4)
    with pytest.raises(ValueError, match="1 to 3 spatial dimensions"):
        ConvNet(4, 4, 2, 3)
