"""What a neural process asks of its backbone: the base class every backbone subclasses."""

from __future__ import annotations

from jaxtyping import Bool, Float
from torch import Tensor, nn

from aenp.errors import InputTypeError
from aenp.grid import Grid


class Backbone(nn.Module):
    """The part of a neural process between a task and the likelihood.

    ``forward(xc, yc, xt, context_mask)`` maps point sets to features ``[batch, nt, 2 dy]``;
    masked context points (mask false) have no influence. A backbone that also predicts data
    given on a grid, every cell at once (the ConvCNPs), sets :attr:`takes_grids` and
    :attr:`resolution_multiple` and implements :meth:`forward_grid`.
    """

    exact_positions = False
    """Whether positions reach ``forward`` in the batch's precision rather than cast to the
    model's dtype (the ConvCNPs place float64 positions on their lattice before any float32
    work, so float64 data keep them exactly equivariant however far the data move)."""
    takes_grids = False
    """Whether :meth:`forward_grid` predicts a grid of data directly."""
    resolution_multiple = 1
    """Every side of a grid given to :meth:`forward_grid` is a multiple of this many cells."""

    def forward_grid(
        self,
        yc: Float[Tensor, "batch *grid dy"],
        context_mask: Bool[Tensor, " batch *grid"],
        grid: Grid,
        extra_inputs: Float[Tensor, "*grid de"] | None = None,
    ) -> Float[Tensor, "batch *grid 2*dy"]:
        """Features of every cell of a grid of data (only if :attr:`takes_grids`).

        Args:
            yc: Values, zero outside the context.
            context_mask: Observed cells.
            grid: The cells' coordinates.
            extra_inputs: Inputs taken as data channels at every cell, if the backbone has any.

        Raises:
            InputTypeError: If the backbone takes point sets only.
        """
        raise InputTypeError(
            f"{type(self).__name__} takes point sets only (takes_grids is False): give the "
            "model a Batch of points, or use a backbone that takes grids (the ConvCNPs)"
        )
