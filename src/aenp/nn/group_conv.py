"""CNNs equivariant to the dihedral group D4 of the square grid and to translations (p4m).

Plain PyTorch (Cohen & Welling, 2016): filters are rotated with ``torch.rot90`` and mirrored
with ``torch.flip``. A *regular* feature map has one copy per group element,
``[batch, channels, 8, H, W]``; the group acts on it by transforming every map spatially and
permuting the group axis. Networks here lift scalar fields to regular ones, process them with
group convolutions, and pool over the group back to scalar fields, so they map
``[batch, channels, H, W]`` to ``[batch, channels, H, W]`` exactly like :mod:`aenp.nn.cnn`, and
commute with the 8 rotations and reflections of the grid (an ``H × W`` grid becomes ``W × H``
under a quarter turn). Exactness needs odd kernels, zero padding and, in the U-Net, even sizes at
every level, which :attr:`GroupUNet.resolution_multiple` states.

Group elements are ``(k, m)``: mirror the last axis if ``m``, then rotate by ``k`` quarter turns.
Their index is ``4 m + k``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from aenp.nn.cnn import check_conv_arguments

D4 = tuple((k, m) for m in (0, 1) for k in range(4))
"""The eight elements ``(k, m)`` of D4, in index order."""
SPATIAL_DIMS = (-2, -1)


def compose(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """The product ``a b`` (apply ``b`` first): mirroring reverses the sense of rotation."""
    (ka, ma), (kb, mb) = a, b
    return ((ka + (-1) ** ma * kb) % 4, ma ^ mb)


def inverse(g: tuple[int, int]) -> tuple[int, int]:
    """The inverse element; mirrors are their own inverses."""
    k, m = g
    return (k, 1) if m else ((-k) % 4, 0)


def transform(x: Tensor, g: tuple[int, int]) -> Tensor:
    """The action of ``g`` on the last two (spatial) dimensions of ``x``."""
    k, m = g
    if m:
        x = x.flip(SPATIAL_DIMS[1])
    return torch.rot90(x, k, SPATIAL_DIMS)


def transform_regular(f: Float[Tensor, "batch channels 8 h w"], g: tuple[int, int]) -> Tensor:
    """The action of ``g`` on regular features: ``(g·f)[:, :, h] = transform(f[:, :, g⁻¹h], g)``."""
    g_inv = inverse(g)
    order = [D4.index(compose(g_inv, h)) for h in D4]
    return transform(f[:, :, order], g)


def _init(weight: Tensor, fan_in: int) -> None:
    nn.init.normal_(weight, std=math.sqrt(2 / fan_in))


class LiftingConv(nn.Module):
    """Scalar fields to regular fields: one convolution per transformed copy of the filters.

    Symmetry: ``lift(transform(x, g)) == transform_regular(lift(x), g)`` for every ``g``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        _init(self.weight, in_channels * kernel_size**2)

    def forward(self, x: Float[Tensor, "batch c_in h w"]) -> Float[Tensor, "batch c_out 8 h w"]:
        """Correlates ``x`` with the 8 rotated and mirrored filters."""
        bank = torch.stack([transform(self.weight, g) for g in D4], dim=1)
        out_channels = self.weight.shape[0]
        out = F.conv2d(x, bank.flatten(0, 1), padding=self.weight.shape[-1] // 2)
        return out.unflatten(1, (out_channels, len(D4))) + self.bias[:, None, None, None]


class GroupConv(nn.Module):
    """Regular fields to regular fields: ``out[g] = Σ_h conv(f[h], g·ψ[g⁻¹h])``.

    Symmetry: ``conv(transform_regular(f, g)) == transform_regular(conv(f), g)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        shape = (out_channels, in_channels, len(D4), kernel_size, kernel_size)
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        _init(self.weight, in_channels * len(D4) * kernel_size**2)
        # order[g][h] = index of g⁻¹h: which filter slice output g applies to input h.
        order = [[D4.index(compose(inverse(g), h)) for h in D4] for g in D4]
        self.register_buffer("order", torch.tensor(order), persistent=False)

    def forward(self, f: Float[Tensor, "batch c_in 8 h w"]) -> Float[Tensor, "batch c_out 8 h w"]:
        """Correlates the regular fields ``f`` with the group-transformed filter bank."""
        bank = torch.stack(
            [transform(self.weight[:, :, self.order[i]], g) for i, g in enumerate(D4)], dim=1
        )
        out_channels = self.weight.shape[0]
        out = F.conv2d(
            f.flatten(1, 2), bank.flatten(0, 1).flatten(1, 2), padding=self.weight.shape[-1] // 2
        )
        return out.unflatten(1, (out_channels, len(D4))) + self.bias[:, None, None, None]


def pool_group(f: Float[Tensor, "batch c 8 h w"]) -> Float[Tensor, "batch c h w"]:
    """Mean over the group axis: regular fields to invariant scalar fields."""
    return f.mean(dim=2)


class GroupConvNet(nn.Module):
    """Lift, residual ``ReLU → group conv`` blocks at one resolution, pool over the group.

    Args:
        dim: Number of spatial dimensions (must be 2).
        channels: Regular channels (each is 8 feature maps) and scalar channels in and out.
        num_layers: Number of residual blocks.
        kernel_size: Odd kernel size.
    """

    resolution_multiple = 1

    def __init__(self, dim: int, channels: int, num_layers: int, kernel_size: int):
        super().__init__()
        check_conv_arguments(dim, kernel_size, "dihedral group CNNs", dims=(2,))
        self.lift = LiftingConv(channels, channels, kernel_size)
        self.layers = nn.ModuleList(
            GroupConv(channels, channels, kernel_size) for _ in range(num_layers)
        )

    def forward(
        self, x: Float[Tensor, "batch channels h w"]
    ) -> Float[Tensor, "batch channels h w"]:
        """Invariant scalar features, same grid shape."""
        f = self.lift(x)
        for conv in self.layers:
            f = f + conv(F.relu(f))
        return pool_group(f)


class GroupUNet(nn.Module):
    """U-Net of group convolutions: 2×2 average pooling down, nearest upsampling up, skips.

    Pooling and upsampling by whole 2×2 blocks commute with quarter turns and mirrors of a grid
    of even size, so each axis must be a multiple of ``2 ** num_levels``.

    Args:
        dim: Number of spatial dimensions (must be 2).
        channels: Regular channels at every level; scalar channels in and out.
        num_levels: Number of resolution halvings.
        kernel_size: Odd kernel size.
    """

    def __init__(self, dim: int, channels: int, num_levels: int, kernel_size: int):
        super().__init__()
        check_conv_arguments(dim, kernel_size, "dihedral group CNNs", dims=(2,))
        self.resolution_multiple = 2**num_levels
        self.lift = LiftingConv(channels, channels, kernel_size)
        self.down = nn.ModuleList(
            GroupConv(channels, channels, kernel_size) for _ in range(num_levels)
        )
        self.up = nn.ModuleList(
            GroupConv(channels if level == 0 else 2 * channels, channels, kernel_size)
            for level in range(num_levels)
        )
        self.out = GroupConv(2 * channels if num_levels else channels, channels, 1)

    def forward(
        self, x: Float[Tensor, "batch channels h w"]
    ) -> Float[Tensor, "batch channels h w"]:
        """Invariant scalar features, same grid shape."""
        f = self.lift(x)
        skips = []
        for conv in self.down:
            skips.append(f)
            f = F.relu(conv(_regular(F.avg_pool2d, f, 2)))
        for conv in self.up:
            upsampled = _regular(F.interpolate, f, scale_factor=2, mode="nearest")
            f = torch.cat([F.relu(conv(upsampled)), skips.pop()], dim=1)
        return pool_group(self.out(f))


def _regular(op, f: Tensor, *args, **kwargs) -> Tensor:
    """Applies a 2-D spatial ``op`` to every map of regular features ``[b, c, 8, h, w]``."""
    out = op(f.flatten(1, 2), *args, **kwargs)
    return out.unflatten(1, f.shape[1:3])
