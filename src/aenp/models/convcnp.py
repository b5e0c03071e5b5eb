"""The convolutional conditional neural process (ConvCNP)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from aenp.nn.fixed_inputs import FixedInputs
from aenp.nn.mlp import MLP
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
        h = self.resize(self.encoder(xc, yc, grid))
        if self.fixed_inputs is not None:
            h = h + self.fixed_inputs(grid.points()[None], num_tasks=h.shape[0])
        h = self.cnn(h.movedim(-1, 1)).movedim(1, -1)
        return self.head(self.decoder(grid, h, xt))
