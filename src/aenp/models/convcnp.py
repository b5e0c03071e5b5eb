"""The convolutional conditional neural process (ConvCNP)."""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from aenp.data.grid import Grid
from aenp.nn.fixed_inputs import FixedInputs
from aenp.nn.mlp import MLP
from aenp.nn.relaxed_conv import RelaxedConvNet
from aenp.nn.setconv import SetConvDecoder, SetConvEncoder, lattice_grid


class ConvCNPBackbone(nn.Module):
    """Set convolution to a lattice grid, a CNN on the grid, set convolution to the targets.

    Exactly equivariant to shifts of every input by multiples of ``1 / points_per_unit``.
    Fixed inputs (see :func:`aenp.approximate`) enter as extra grid channels before the CNN.

    Args:
        dim_x: Input dimension ``dx``.
        dim_y: Output dimension ``dy``.
        cnn: Translation-equivariant CNN on ``[batch, channels, *grid]``; its attribute
            ``resolution_multiple`` fixes the grid sizes it accepts.
        channels: Channels of the CNN.
        points_per_unit: Grid density; the grid lies on multiples of ``1 / points_per_unit``.
        margin: Extent of the grid beyond the data on each side.
    """

    def __init__(
        self,
        dim_x: int,
        dim_y: int,
        cnn: nn.Module,
        channels: int,
        points_per_unit: float,
        margin: float,
    ):
        super().__init__()
        self.dim_x = dim_x
        self.points_per_unit = points_per_unit
        self.margin = margin
        self.fixed_input_width = channels
        self.fixed_inputs: FixedInputs | None = None
        init_lengthscale = 2 / points_per_unit
        self.encoder = SetConvEncoder(dim_x, init_lengthscale)
        self.resize = nn.Linear(dim_y + 1, channels)
        self.cnn = cnn
        self.decoder = SetConvDecoder(dim_x, init_lengthscale)
        self.head = MLP(channels, 2 * dim_y, (channels,))

    def forward(
        self,
        xc: Float[Tensor, "batch nc dx"],
        yc: Float[Tensor, "batch nc dy"],
        xt: Float[Tensor, "batch nt dx"],
    ) -> Float[Tensor, "batch nt 2*dy"]:
        """Target features for the likelihood."""
        x = torch.cat([xc, xt], dim=1)
        grid = lattice_grid(x, self.points_per_unit, self.margin, self.cnn.resolution_multiple)
        z = self._on_grid(self.encoder(xc, yc, grid), grid)
        return self.head(self.decoder(grid, z, xt))

    def forward_grid(
        self,
        yc: Float[Tensor, "batch *grid dy"],
        context_mask: Bool[Tensor, " batch *grid"],
        grid: Grid,
    ) -> Float[Tensor, "batch *grid 2*dy"]:
        """Features of every cell of a grid of data; the set convolutions are skipped.

        Args:
            yc: Values, zero outside the context.
            context_mask: Observed cells.
            grid: The cells' coordinates.
        """
        multiple = self.cnn.resolution_multiple
        if any(size % multiple for size in grid.shape):
            raise ValueError(
                f"grid of shape {grid.shape} must have a multiple of {multiple} cells along "
                f"every axis for this CNN; crop or pad the grid, or use fewer U-Net levels"
            )
        density = context_mask[..., None].to(yc.dtype)
        return self.head(self._on_grid(torch.cat([density, yc], dim=-1), grid))

    def _on_grid(
        self, h: Float[Tensor, "batch *grid dy+1"], grid: Grid
    ) -> Float[Tensor, "batch *grid channels"]:
        """Density and data channels → (plus fixed inputs) → CNN features, channels last."""
        h = self.resize(h)
        if self.fixed_inputs is not None:
            h = h + self.fixed_inputs(grid.points()[None], num_tasks=h.shape[0])
        return self.cnn(h.movedim(-1, 1)).movedim(1, -1)


class RelaxedConvCNPBackbone(ConvCNPBackbone):
    """ConvCNP whose CNN mixes filter banks with position-dependent weights (RelaxedConvCNP).

    Its injection point turns fixed inputs into the relaxed convolutions' weight departures
    instead of adding them as channels; without fixed inputs (or inside
    ``strictly_equivariant``) the weights are uniform and the model is an ordinary ConvCNP.
    """

    def __init__(
        self,
        dim_x: int,
        dim_y: int,
        cnn: RelaxedConvNet,
        channels: int,
        points_per_unit: float,
        margin: float,
    ):
        super().__init__(dim_x, dim_y, cnn, channels, points_per_unit, margin)
        self.fixed_input_width = cnn.num_weights

    def _on_grid(
        self, h: Float[Tensor, "batch *grid dy+1"], grid: Grid
    ) -> Float[Tensor, "batch *grid channels"]:
        """Density and data channels → relaxed CNN (weights from fixed inputs), channels last."""
        h = self.resize(h)
        departures = None
        if self.fixed_inputs is not None:
            departures = self.fixed_inputs(grid.points()[None], num_tasks=h.shape[0])
        return self.cnn(h.movedim(-1, 1), departures).movedim(1, -1)
