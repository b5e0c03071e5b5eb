"""Relaxed (approximately translation-equivariant) convolutions (Wang, Walters & Yu, 2022).

A relaxed convolution has ``L`` filter banks ``ψ_l`` and mixes their responses with weights that
depend on absolute position: ``out(x) = Σ_l w_l(x) (ψ_l ⋆ h)(x)``. With uniform weights
``w_l = 1 / L`` it is an ordinary convolution with the mean filter, hence exactly equivariant.
Here ``w(x) = 1 / L + Δ(x)``, where the departures ``Δ`` are the fixed inputs of
:mod:`aenp.nn.fixed_inputs` (one per bank and layer): they start at zero, are dropped per task
during training, vanish outside their domain and are zeroed by ``strictly_equivariant`` — so
the relaxation is defined on any grid, not tied to one grid size.
"""

from __future__ import annotations

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from aenp.errors import InputError
from aenp.nn.cnn import CONV, check_conv_arguments, from_conv_layout, to_conv_layout


class RelaxedConv(nn.Module):
    """``L`` convolutions mixed by position-dependent weights ``1 / L + Δ(x)``.

    Args:
        dim: Number of spatial dimensions.
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Odd kernel size.
        num_banks: Number ``L`` of filter banks.
    """

    def __init__(
        self, dim: int, in_channels: int, out_channels: int, kernel_size: int, num_banks: int
    ):
        super().__init__()
        check_conv_arguments(dim, kernel_size)
        if num_banks < 1:
            raise InputError(f"num_banks must be at least 1, got {num_banks}")
        self.num_banks = num_banks
        self.conv = CONV[dim](
            in_channels, num_banks * out_channels, kernel_size, padding=kernel_size // 2
        )

    def forward(
        self,
        h: Float[Tensor, "batch c_in *grid"],
        departure: Float[Tensor, "batch banks *grid"] | None = None,
    ) -> Float[Tensor, "batch c_out *grid"]:
        """Mixes the banks' responses; ``departure = None`` means uniform weights.

        Both inputs come in the layout of :func:`aenp.nn.cnn.to_conv_layout`.
        """
        responses = self.conv(h).unflatten(1, (self.num_banks, -1))
        if departure is None:
            return responses.mean(dim=1)
        weights = 1 / self.num_banks + departure
        return (weights[:, :, None] * responses).sum(dim=1)


class RelaxedConvNet(nn.Module):
    """Residual stack of ``ReLU → relaxed conv`` blocks at one resolution.

    Takes the per-layer, per-bank weight departures as a second input (channels last, as
    fixed inputs come): ``[batch, *grid, num_layers * num_banks]``, or ``None``.

    Args:
        dim: Number of spatial dimensions.
        channels: Channels of every layer.
        num_layers: Number of residual blocks.
        kernel_size: Odd kernel size.
        num_banks: Filter banks ``L`` per layer.
    """

    resolution_multiple = 1

    def __init__(self, dim: int, channels: int, num_layers: int, kernel_size: int, num_banks: int):
        super().__init__()
        self.num_weights = num_layers * num_banks
        self.layers = nn.ModuleList(
            RelaxedConv(dim, channels, channels, kernel_size, num_banks) for _ in range(num_layers)
        )

    def forward(
        self,
        h: Float[Tensor, "batch channels *grid"],
        departures: Float[Tensor, "batch *grid weights"] | None = None,
    ) -> Float[Tensor, "batch channels *grid"]:
        """Applies the blocks; the grid shape is preserved."""
        grid_dims = h.dim() - 2
        h = to_conv_layout(h)
        per_layer = [None] * len(self.layers)
        if departures is not None:
            departures = to_conv_layout(departures.movedim(-1, 1))
            per_layer = departures.chunk(len(self.layers), dim=1)
        for conv, departure in zip(self.layers, per_layer, strict=True):
            h = h + conv(F.relu(h), departure)
        return from_conv_layout(h, grid_dims)
