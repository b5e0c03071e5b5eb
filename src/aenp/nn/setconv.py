"""Set convolutions between point sets and a grid placed on a global lattice.

The grid is data-adaptive (it covers the inputs of the batch plus a margin), but it is chosen
in whole cells of the lattice of spacing ``1 / points_per_unit``, held as integer lattice
indices, and centred on the lattice box that covers the data. Moving the data by a lattice vector
moves the grid by the same vector; rotating it by a quarter turn or mirroring it about a
lattice point (or a cell centre) rotates or mirrors the grid, padding included. Every array
the model computes is then only re-indexed, so a ConvCNP is exactly equivariant to lattice
shifts however far the data move, and an EquivCNP to the whole symmetry group of the lattice.

Distances between points and the grid are measured from a lattice point near the grid, in
float64, before any work in the model's precision: a float32 model given float64 inputs loses
nothing to their distance from the origin.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn

from aenp.data.grid import Grid
from aenp.errors import InputError

GRID_LETTERS = "uvw"
DENSITY_EPS = 1e-8
DEFAULT_MAX_GRID_POINTS = 2**22
"""Largest grid a point-set batch may ask for: one float32 channel of it is 16 MiB, so a
64-channel U-Net holds about 3 GiB of activations per task on it — the most one machine
handles, and far beyond any grid the experiments need (a 128 × 128 field is 2**14)."""
RESOLVED_FRACTION = 2**-10
"""Warn when the inputs' precision resolves positions more coarsely than this fraction of a
cell: the rounding then moves set-convolution weights by about float32's tolerance (1e-3)."""
MAX_CELLS = 2**52
"""Inputs this many cells from the origin are beyond float64's resolution of one cell."""


@dataclass(frozen=True)
class LatticeGrid:
    """A grid of spacing ``1 / points_per_unit`` whose points are known exactly.

    Along axis ``d`` the points are ``(anchor[d] + offset[d] + j) / points_per_unit`` for
    ``j < shape[d]``: on the lattice (``offset`` 0) or midway between lattice points (1/2).

    Attributes:
        anchor: A lattice index per axis (an integer near the grid's first point).
        offset: 0 or 0.5 per axis.
        shape: Number of points per axis.
        points_per_unit: Lattice density.
    """

    anchor: tuple[int, ...]
    offset: tuple[float, ...]
    shape: tuple[int, ...]
    points_per_unit: float

    def cells(self, x: Float[Tensor, "batch n dx"]) -> Float[Tensor, "batch n dx"]:
        """Positions in cells from the anchor, in float64 (exact for lattice shifts of ``x``)."""
        anchor = torch.tensor(self.anchor, dtype=torch.float64, device=x.device)
        return x.double() * self.points_per_unit - anchor

    def axes_in_cells(self, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, ...]:
        """Grid coordinates in cells from the anchor, ``[size_d]`` per axis."""
        return tuple(
            offset + torch.arange(size, dtype=dtype, device=device)
            for offset, size in zip(self.offset, self.shape, strict=True)
        )

    def absolute(self, device: torch.device) -> Grid:
        """The same grid in absolute float64 coordinates (for fixed inputs)."""
        axes = self.axes_in_cells(torch.float64, device)
        return Grid(
            tuple(
                (anchor + axis) / self.points_per_unit
                for anchor, axis in zip(self.anchor, axes, strict=True)
            )
        )


def lattice_grid(
    x: Float[Tensor, "batch n dx"],
    points_per_unit: float,
    margin: float,
    multiple: int = 1,
    max_points: int = DEFAULT_MAX_GRID_POINTS,
) -> LatticeGrid:
    """The lattice grid covering ``x`` plus ``margin``, centred, sized a multiple of ``multiple``.

    The lattice box ``[floor(min - margin), ceil(max + margin)]`` (in cells) is padded
    equally on both sides to a multiple of ``multiple`` points; an odd padding puts the
    points midway between lattice points, which keeps the grid centred on the box.

    Args:
        x: Every input of the batch (context and target).
        points_per_unit: Lattice density; the spacing is ``1 / points_per_unit``.
        margin: Extra extent on each side of the data.
        multiple: Each axis has a multiple of this many points (for strided CNNs).
        max_points: Largest number of grid points allowed.

    Raises:
        InputError: If the inputs lie too far from the origin to be placed on the lattice,
            or the grid would have more than ``max_points`` points.
    """
    cells = x.detach().double() * points_per_unit
    reach = cells.abs().amax().item()
    if not reach < MAX_CELLS:
        raise InputError(
            f"inputs (xc and xt) reach |x| = {reach / points_per_unit:.3g}, beyond "
            f"{MAX_CELLS / points_per_unit:.3g}, where float64 cannot resolve the grid spacing "
            f"1/{points_per_unit:g}; re-centre or rescale the inputs"
        )
    resolution = torch.finfo(x.dtype).eps * reach
    if resolution > RESOLVED_FRACTION:
        warnings.warn(
            f"{x.dtype} inputs reach |x| = {reach / points_per_unit:.3g}, where they resolve "
            f"positions to only {resolution:.2g} of a grid cell (spacing "
            f"1/{points_per_unit:g}); predictions lose accuracy and exact lattice-shift "
            "equivariance. Re-centre the inputs near the origin, or use float64.",
            stacklevel=2,
        )
    low = torch.floor(cells.amin(dim=(0, 1)) - margin * points_per_unit).tolist()
    high = torch.ceil(cells.amax(dim=(0, 1)) + margin * points_per_unit).tolist()
    sizes = [int(hi - lo) + 1 for lo, hi in zip(low, high, strict=True)]
    shape = tuple(math.ceil(size / multiple) * multiple for size in sizes)
    if math.prod(shape) > max_points:
        extents = " × ".join(
            f"{(hi - lo) / points_per_unit:.4g}" for lo, hi in zip(low, high, strict=True)
        )
        counts = " × ".join(f"{n:,}" for n in shape)
        if len(shape) > 1:
            counts += f" = {math.prod(shape):,}"
        raise InputError(
            f"the inputs (xc and xt) plus a margin of {margin:g} span {extents}; "
            f"at spacing 1/{points_per_unit:g} that is a grid of {counts} points, more than "
            f"max_grid_points = {max_points:,}; rescale the inputs, lower points_per_unit, "
            "or raise max_grid_points"
        )
    anchor, offset = [], []
    for lo, size, padded in zip(low, sizes, shape, strict=True):
        # First point lo - pad / 2: a half-integer when the padding is odd.
        pad = padded - size
        anchor.append(int(lo) - (pad + 1) // 2)
        offset.append(pad % 2 / 2)
    return LatticeGrid(tuple(anchor), tuple(offset), shape, points_per_unit)


class SetConv(nn.Module):
    """Gaussian set convolution with a learnable lengthscale.

    Args:
        dim_x: Input dimension ``dx`` (1 to 3).
        init_lengthscale: Initial lengthscale, typically twice the grid spacing.
        isotropic: One lengthscale shared by every dimension (rotation-invariant weights)
            instead of one per dimension.
    """

    def __init__(self, dim_x: int, init_lengthscale: float, isotropic: bool = False):
        super().__init__()
        if not 1 <= dim_x <= len(GRID_LETTERS):
            raise InputError(f"set convolutions support 1 to 3 input dimensions, got {dim_x}")
        self.dim_x = dim_x
        num_lengthscales = 1 if isotropic else dim_x
        self.log_lengthscale = nn.Parameter(
            torch.full((num_lengthscales,), math.log(init_lengthscale))
        )

    def weights(self, x: Float[Tensor, "batch n dx"], grid: LatticeGrid) -> list[Tensor]:
        """Per-dimension Gaussian weights ``[batch, n, size_d]`` between points and grid axes."""
        lengthscale = self.log_lengthscale.exp().expand(self.dim_x) * grid.points_per_unit
        cells = grid.cells(x).to(lengthscale.dtype)
        axes = grid.axes_in_cells(lengthscale.dtype, x.device)
        return [
            torch.exp(-0.5 * ((cells[..., d, None] - axis) / lengthscale[d]) ** 2)
            for d, axis in enumerate(axes)
        ]


class SetConvEncoder(SetConv):
    """Points to grid: a density channel and the density-normalised outputs."""

    def forward(
        self, xc: Float[Tensor, "batch nc dx"], yc: Float[Tensor, "batch nc dy"], grid: LatticeGrid
    ) -> Float[Tensor, "batch *grid dy+1"]:
        """Encodes the context set on ``grid`` (channels last, in the module's dtype)."""
        letters = GRID_LETTERS[: self.dim_x]
        spec = ",".join(f"bn{g}" for g in letters) + f",bnc->b{letters}c"
        weights = self.weights(xc, grid)
        yc = yc.to(weights[0].dtype)
        h = torch.einsum(spec, *weights, torch.cat([torch.ones_like(yc[..., :1]), yc], dim=-1))
        density, values = h[..., :1], h[..., 1:]
        return torch.cat([density, values / (density + DENSITY_EPS)], dim=-1)


class SetConvDecoder(SetConv):
    """Grid to points: a Gaussian-weighted sum of grid features at each target."""

    def forward(
        self,
        grid: LatticeGrid,
        h: Float[Tensor, "batch *grid channels"],
        xt: Float[Tensor, "batch nt dx"],
    ) -> Float[Tensor, "batch nt channels"]:
        """Reads the grid features ``h`` (channels last) at the targets ``xt``."""
        letters = GRID_LETTERS[: self.dim_x]
        spec = ",".join(f"bt{g}" for g in letters) + f",b{letters}c->btc"
        return torch.einsum(spec, *self.weights(xt, grid), h)
