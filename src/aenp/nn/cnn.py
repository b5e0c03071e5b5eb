"""Translation-equivariant convolutional networks on 1-D to 3-D grids (channels first)."""

from __future__ import annotations

from collections.abc import Collection

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from aenp.errors import InputError

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_TRANSPOSE = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def check_conv_arguments(
    dim: int, kernel_size: int, network: str = "convolutions", dims: Collection[int] = CONV.keys()
) -> None:
    """Names a number of spatial dimensions outside ``dims`` or an even kernel size.

    An even kernel has no centre cell: its output would sit half a cell off the grid, which
    breaks equivariance.
    """
    if dim not in dims:
        low, high = min(dims), max(dims)
        supported = f"{low}-D" if low == high else f"{low}-D to {high}-D"
        raise InputError(f"{network} act on {supported} grids, got {dim} spatial dimension(s)")
    if kernel_size % 2 == 0:
        raise InputError(
            f"kernel_size must be odd so filters have a centre cell, got {kernel_size}"
        )


class ConvNet(nn.Module):
    """Residual stack of ``ReLU → conv`` blocks at one resolution.

    Args:
        dim: Number of spatial dimensions.
        channels: Channels of every layer.
        num_layers: Number of residual blocks.
        kernel_size: Odd kernel size.
    """

    resolution_multiple = 1

    def __init__(self, dim: int, channels: int, num_layers: int, kernel_size: int):
        super().__init__()
        check_conv_arguments(dim, kernel_size)
        self.layers = nn.ModuleList(
            CONV[dim](channels, channels, kernel_size, padding=kernel_size // 2)
            for _ in range(num_layers)
        )

    def forward(
        self, h: Float[Tensor, "batch channels *grid"]
    ) -> Float[Tensor, "batch channels *grid"]:
        """Applies the blocks; the grid shape is preserved."""
        for conv in self.layers:
            h = h + conv(F.relu(h))
        return h


class UNet(nn.Module):
    """U-Net: strided convolutions down, transposed convolutions up, skip connections.

    Args:
        dim: Number of spatial dimensions.
        channels: Channels of every layer.
        num_levels: Number of stride-2 resolution levels; each grid axis must be a multiple of
            ``2 ** num_levels`` (see :attr:`resolution_multiple`).
        kernel_size: Odd kernel size.
    """

    def __init__(self, dim: int, channels: int, num_levels: int, kernel_size: int):
        super().__init__()
        check_conv_arguments(dim, kernel_size)
        self.resolution_multiple = 2**num_levels
        padding = kernel_size // 2
        self.down = nn.ModuleList(
            CONV[dim](channels, channels, kernel_size, stride=2, padding=padding)
            for _ in range(num_levels)
        )
        self.up = nn.ModuleList(
            CONV_TRANSPOSE[dim](
                channels if level == 0 else 2 * channels,
                channels,
                kernel_size,
                stride=2,
                padding=padding,
                output_padding=1,
            )
            for level in range(num_levels)
        )
        self.out = CONV[dim](2 * channels if num_levels else channels, channels, 1)

    def forward(
        self, h: Float[Tensor, "batch channels *grid"]
    ) -> Float[Tensor, "batch channels *grid"]:
        """Applies the U-Net; the grid shape is preserved."""
        skips = []
        for conv in self.down:
            skips.append(h)
            h = F.relu(conv(h))
        for conv in self.up:
            h = torch.cat([F.relu(conv(h)), skips.pop()], dim=1)
        return self.out(h)
