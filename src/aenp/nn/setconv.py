"""Set convolutions between point sets and a grid anchored on a global lattice.

The grid is data-adaptive (it covers the inputs of the batch plus a margin) but its points
are integer multiples of ``1 / points_per_unit``. Shifting every input by a multiple of the
spacing therefore shifts the grid by the same amount and leaves every array the model
computes unchanged: a ConvCNP is exactly equivariant to lattice shifts however far the data
move.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor, nn

from aenp.data.grid import Grid
from aenp.errors import InputError

GRID_LETTERS = "uvw"
DENSITY_EPS = 1e-8


def lattice_grid(
    x: Float[Tensor, "batch n dx"], points_per_unit: float, margin: float, multiple: int = 1
) -> Grid:
    """The smallest lattice grid covering ``x`` plus ``margin``, sized a multiple of ``multiple``.

    Args:
        x: Every input of the batch (context and target).
        points_per_unit: Lattice density; the spacing is ``1 / points_per_unit``.
        margin: Extra extent on each side of the data.
        multiple: Each axis has a multiple of this many points (for strided CNNs).
    """
    low = torch.floor((x.amin(dim=(0, 1)) - margin) * points_per_unit)
    high = torch.ceil((x.amax(dim=(0, 1)) + margin) * points_per_unit)
    axes = []
    for lo, hi in zip(low.tolist(), high.tolist(), strict=True):
        size = int(hi - lo) + 1
        padded = math.ceil(size / multiple) * multiple
        start = lo - (padded - size) // 2
        index = torch.arange(padded, device=x.device, dtype=x.dtype)
        axes.append((start + index) / points_per_unit)
    return Grid(tuple(axes))


class SetConv(nn.Module):
    """Gaussian set convolution with one learnable lengthscale per input dimension.

    Args:
        dim_x: Input dimension ``dx`` (1 to 3).
        init_lengthscale: Initial lengthscale, typically twice the grid spacing.
    """

    def __init__(self, dim_x: int, init_lengthscale: float):
        super().__init__()
        if not 1 <= dim_x <= len(GRID_LETTERS):
            raise InputError(f"set convolutions support 1 to 3 input dimensions, got {dim_x}")
        self.dim_x = dim_x
        self.log_lengthscale = nn.Parameter(torch.full((dim_x,), math.log(init_lengthscale)))

    def weights(self, x: Float[Tensor, "batch n dx"], grid: Grid) -> list[Tensor]:
        """Per-dimension Gaussian weights ``[batch, n, size_d]`` between points and grid axes."""
        lengthscale = self.log_lengthscale.exp()
        return [
            torch.exp(-0.5 * ((x[..., d, None] - axis) / lengthscale[d]) ** 2)
            for d, axis in enumerate(grid.axes)
        ]


class SetConvEncoder(SetConv):
    """Points to grid: a density channel and the density-normalised outputs."""

    def forward(
        self, xc: Float[Tensor, "batch nc dx"], yc: Float[Tensor, "batch nc dy"], grid: Grid
    ) -> Float[Tensor, "batch *grid dy+1"]:
        """Encodes the context set on ``grid`` (channels last)."""
        letters = GRID_LETTERS[: self.dim_x]
        spec = ",".join(f"bn{g}" for g in letters) + f",bnc->b{letters}c"
        ones = torch.ones_like(yc[..., :1])
        h = torch.einsum(spec, *self.weights(xc, grid), torch.cat([ones, yc], dim=-1))
        density, values = h[..., :1], h[..., 1:]
        return torch.cat([density, values / (density + DENSITY_EPS)], dim=-1)


class SetConvDecoder(SetConv):
    """Grid to points: a Gaussian-weighted sum of grid features at each target."""

    def forward(
        self, grid: Grid, h: Float[Tensor, "batch *grid channels"], xt: Float[Tensor, "batch nt dx"]
    ) -> Float[Tensor, "batch nt channels"]:
        """Reads the grid features ``h`` (channels last) at the targets ``xt``."""
        letters = GRID_LETTERS[: self.dim_x]
        spec = ",".join(f"bt{g}" for g in letters) + f",b{letters}c->btc"
        return torch.einsum(spec, *self.weights(xt, grid), h)
