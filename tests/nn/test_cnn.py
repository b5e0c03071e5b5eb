"""The grid CNNs: 1-D layers run as 2-D ones in channels-last layout, and compute the 1-D maps."""

import pytest
import torch
import torch.nn.functional as F

from aenp.nn.cnn import (
    ConvNet,
    PlanarConv1d,
    PlanarConvTranspose1d,
    UNet,
    from_conv_layout,
    to_conv_layout,
)
from aenp.nn.relaxed_conv import RelaxedConvNet

F64 = torch.float64


@pytest.mark.parametrize("cnn", [UNet(2, 4, 2, 3), ConvNet(2, 4, 2, 3)])
def test_cnns_keep_the_grid_shape(cnn):
    h = torch.randn(1, 4, 16, 12)
    assert cnn(h).shape == h.shape


def test_cnn_arguments_are_checked():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        UNet(1, 4, 2, 4)
    with pytest.raises(ValueError, match="convolutions act on 1-D to 3-D grids, got 4"):
        ConvNet(4, 4, 2, 3)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize(
    "transposed, options",
    [
        (False, {"stride": 1, "padding": 2}),
        (False, {"stride": 2, "padding": 2, "dilation": 2}),
        (False, {"stride": 3, "padding": 1, "groups": 2}),
        (True, {"stride": 2, "padding": 2, "output_padding": 1}),
        (True, {"stride": 3, "padding": 1, "output_padding": 2, "groups": 2}),
        (True, {"stride": 2, "padding": 3, "dilation": 2, "output_padding": 1}),
    ],
)
def test_planar_layers_compute_the_1d_convolution_and_its_gradients(dtype, transposed, options):
    torch.manual_seed(0)
    layer = (PlanarConvTranspose1d if transposed else PlanarConv1d)(4, 6, 5, **options).to(dtype)
    x = torch.randn(3, 4, 23, dtype=dtype, requires_grad=True)
    planar = layer(to_conv_layout(x))
    assert planar.shape[2] == 1 and planar.is_contiguous(memory_format=torch.channels_last)
    out = from_conv_layout(planar, 1)
    reference = (F.conv_transpose1d if transposed else F.conv1d)(
        x, layer.weight, layer.bias, **options
    )
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {}
    torch.testing.assert_close(out, reference, **tolerance)
    seed = torch.randn_like(reference)
    grads = torch.autograd.grad(out, (x, layer.weight, layer.bias), seed)
    expected = torch.autograd.grad(reference, (x, layer.weight, layer.bias), seed)
    for grad, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(grad, want, **tolerance)


def reference_unet(unet, h):
    """The U-Net's map on ``[batch, channels, n]`` with ``F.conv1d`` and its parameters."""
    skips = []
    for conv in unet.down:
        skips.append(h)
        h = F.relu(F.conv1d(h, conv.weight, conv.bias, stride=2, padding=conv.padding))
    for conv in unet.up:
        up = F.conv_transpose1d(
            h, conv.weight, conv.bias, stride=2, padding=conv.padding, output_padding=1
        )
        h = torch.cat([F.relu(up), skips.pop()], dim=1)
    return F.conv1d(h, unet.out.weight, unet.out.bias)


def reference_convnet(net, h):
    """The residual stack's map with ``F.conv1d``."""
    for conv in net.layers:
        h = h + F.conv1d(F.relu(h), conv.weight, conv.bias, padding=conv.padding)
    return h


def reference_relaxed(net, h, departures):
    """The relaxed stack's map with ``F.conv1d``: banks mixed by ``1 / L + Δ(x)``."""
    per_layer = departures.movedim(-1, 1).chunk(len(net.layers), dim=1)
    for layer, departure in zip(net.layers, per_layer, strict=True):
        conv = layer.conv
        responses = F.conv1d(F.relu(h), conv.weight, conv.bias, padding=conv.padding)
        responses = responses.unflatten(1, (layer.num_banks, -1))
        h = h + ((1 / layer.num_banks + departure)[:, :, None] * responses).sum(dim=1)
    return h


@pytest.mark.parametrize("channels_last", [False, True])
def test_1d_networks_compute_the_maps_of_1d_convolutions(channels_last):
    """As the ConvCNP hands them over (channels last in memory) or contiguous."""
    torch.manual_seed(0)
    h = torch.randn(2, 32, 4, dtype=F64).movedim(-1, 1)  # [batch, channels, n]
    if not channels_last:
        h = h.contiguous()
    unet, convnet = UNet(1, 4, 3, 5).double(), ConvNet(1, 4, 2, 3).double()
    relaxed = RelaxedConvNet(1, 4, 2, 3, num_banks=3).double()
    departures = 0.1 * torch.randn(2, 32, 2 * 3, dtype=F64)
    torch.testing.assert_close(unet(h), reference_unet(unet, h))
    torch.testing.assert_close(convnet(h), reference_convnet(convnet, h))
    torch.testing.assert_close(relaxed(h, departures), reference_relaxed(relaxed, h, departures))
    uniform = torch.zeros_like(departures)
    torch.testing.assert_close(relaxed(h), reference_relaxed(relaxed, h, uniform))


@pytest.mark.parametrize("grid", [(24,), (8, 6), (4, 6, 2)])
def test_conv_layout_is_a_view_of_channels_last_features_and_round_trips(grid):
    features = torch.randn(2, *grid, 3)  # channels last, as the ConvCNP computes them
    h = features.movedim(-1, 1)
    laid_out = to_conv_layout(h)
    assert laid_out.data_ptr() == features.data_ptr()  # no copy
    back = from_conv_layout(laid_out, len(grid))
    assert back.shape == h.shape
    assert torch.equal(back, h)
    assert torch.equal(from_conv_layout(to_conv_layout(h.contiguous()), len(grid)), h)
