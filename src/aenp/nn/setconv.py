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

Banded set convolutions (the default) drop every Gaussian weight between a point and a grid
point farther apart than ``TRUNCATION_RADIUS`` ≈ 8.58 lengthscales along some axis, so each
dropped weight is below ``TRUNCATION = DENSITY_EPS**2 = 1e-16`` (of the peak weight, 1). Along
each axis a point's weights are computed only in a window of consecutive grid points that
holds every grid point within the radius, and scattered into the dense weights the sums use
(a batched matrix product: gathering windows of grid features measured slower). The window is
``2 R l + 3`` points (``R`` the radius, ``l`` the lengthscale in cells), rounded up to a
multiple of ``WINDOW_MULTIPLE`` = 4 so that it changes rarely as ``l`` is learned (40 points
at the initial ``l`` of 2 cells), or the whole axis where that is no smaller. Against the
dense sums, the truncation changes at most:

* the encoder's density channel by ``nc * TRUNCATION``;
* its normalised channels by ``2 * nc * max|yc| * TRUNCATION / DENSITY_EPS = 2e-8 * nc *
  max|yc|`` (far from the data the density is as small as ``DENSITY_EPS``, which amplifies
  what is dropped; hence ``TRUNCATION`` is tied to it);
* a decoder output by ``(grid points) * TRUNCATION * max|h|``;

and gradients by as little, relatively. Whether a weight is dropped depends on the distance
only, never on where a window starts, so equivariance to lattice shifts and to the rotations
and reflections of the lattice is as exact as with dense weights. The window width is read
from the lengthscale's value on the host: the ConvCNP reads it with the grid's extent, one
host synchronisation per forward pass.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from aenp.errors import InputError, InputTypeError
from aenp.grid import Grid

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
TRUNCATION = DENSITY_EPS**2
"""Banded set convolutions drop Gaussian weights below this (see the module docstring)."""
TRUNCATION_RADIUS = math.sqrt(-2 * math.log(TRUNCATION))
"""Distance in lengthscales beyond which weights are dropped: about 8.58."""
WINDOW_MULTIPLE = 4
"""Window widths are multiples of this many grid points, so they change rarely."""
COMPILED_WINDOW_MULTIPLE = 16
"""The multiple for a compiled model (:func:`widen_windows`), to which each new width is a
recompilation (30 s for the quick ConvCNP's first on a 2-CPU machine), and after eight torch
runs the model eagerly. The window of the initial lengthscale, 2 cells, is then 48 points, and
it changes once, to 32, as the lengthscale falls below 1.7 cells (the quick ConvCNPs end near
1.35), where multiples of 4 change it three times. Eager, the wider windows cost 1-2% of a
quick ConvCNP step on a 2-core CPU, which keeps multiples of 4."""


@dataclass(frozen=True)
class LatticeGrid:
    """A grid of spacing ``1 / points_per_unit`` whose points are known exactly.

    Along axis ``d`` the points are ``(anchor[d] + offset[d] + j) / points_per_unit`` for
    ``j < shape[d]``: on the lattice (``offset`` 0) or midway between lattice points (1/2).

    Attributes:
        anchor: A lattice index per axis (an integer near the grid's first point), ``[dx]``
            float64 on the data's device: a tensor, so that a compiled model takes it as an
            input rather than a constant to recompile for.
        offset: 0 or 0.5 per axis, ``[dx]`` float64 on the data's device (a tensor likewise).
        shape: Number of points per axis.
        points_per_unit: Lattice density.
    """

    anchor: Float[Tensor, " dx"]
    offset: Float[Tensor, " dx"]
    shape: tuple[int, ...]
    points_per_unit: float

    def cells(self, x: Float[Tensor, "batch n dx"]) -> Float[Tensor, "batch n dx"]:
        """Positions in cells from the anchor, in float64 (exact for lattice shifts of ``x``)."""
        return x.double() * self.points_per_unit - self.anchor

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


@torch.compiler.disable
def lattice_grid(
    x: Float[Tensor, "batch n dx"],
    points_per_unit: float,
    margin: float,
    multiple: int = 1,
    max_points: int = DEFAULT_MAX_GRID_POINTS,
    mask: Bool[Tensor, "batch n"] | None = None,
) -> LatticeGrid:
    """The lattice grid covering ``x`` plus ``margin``, centred, sized a multiple of ``multiple``.

    The lattice box ``[floor(min - margin), ceil(max + margin)]`` (in cells) is padded
    equally on both sides to a multiple of ``multiple`` points; an odd padding puts the
    points midway between lattice points, which keeps the grid centred on the box.

    The extent is read on the host (one synchronisation); a compiled model runs this function
    eagerly and sees only the grid's shape as a constant. A model that reads more at the same
    time calls :func:`lattice_extent` and :func:`grid_of_extent` itself.

    Args:
        x: Every input of the batch (context and target).
        points_per_unit: Lattice density; the spacing is ``1 / points_per_unit``.
        margin: Extra extent on each side of the data.
        multiple: Each axis has a multiple of this many points (for strided CNNs).
        max_points: Largest number of grid points allowed.
        mask: Which points of ``x`` count (padding does not); the others are ignored and may
            hold any value. ``None``: every point counts.

    Raises:
        InputError: If the inputs lie too far from the origin to be placed on the lattice,
            the grid would have more than ``max_points`` points, or ``mask`` has the wrong
            shape or selects no point.
        InputTypeError: If ``mask`` is not boolean.
    """
    extent = lattice_extent(x, points_per_unit, margin, mask).tolist()
    return grid_of_extent(extent, x, points_per_unit, margin, multiple, max_points)


def lattice_extent(
    x: Float[Tensor, "batch n dx"],
    points_per_unit: float,
    margin: float,
    mask: Bool[Tensor, "batch n"] | None = None,
) -> Float[Tensor, " 1+2*dx"]:
    """What places the lattice grid of :func:`lattice_grid`, on the data's device, in float64.

    The largest ``|x|`` in cells, then the lattice box's lowest and highest index per axis
    (``+inf`` and ``-inf`` if ``mask`` selects no point), for :func:`grid_of_extent`.
    """
    cells = x.detach().double() * points_per_unit
    magnitude, lowest, highest = cells.abs(), cells, cells
    if mask is not None:
        if mask.dtype != torch.bool:
            raise InputTypeError(f"mask must be a bool tensor, got dtype {mask.dtype}")
        if mask.shape != x.shape[:-1]:
            raise InputError(
                f"mask must have the shape [batch, n] = {list(x.shape[:-1])} of x, "
                f"got {list(mask.shape)}"
            )
        counted = mask[..., None]
        magnitude = torch.where(counted, magnitude, 0.0)
        lowest = torch.where(counted, cells, math.inf)
        highest = torch.where(counted, cells, -math.inf)
    return torch.cat(
        [
            magnitude.amax()[None],
            torch.floor(lowest.amin(dim=(0, 1)) - margin * points_per_unit),
            torch.ceil(highest.amax(dim=(0, 1)) + margin * points_per_unit),
        ]
    )


def grid_of_extent(
    extent: list[float],
    x: Float[Tensor, "batch n dx"],
    points_per_unit: float,
    margin: float,
    multiple: int = 1,
    max_points: int = DEFAULT_MAX_GRID_POINTS,
) -> LatticeGrid:
    """The lattice grid of :func:`lattice_grid` from ``extent``, :func:`lattice_extent` read.

    ``x`` gives only its dtype, device and dimension; see :func:`lattice_grid` for the rest.
    """
    reach, *bounds = extent
    low, high = bounds[: x.shape[-1]], bounds[x.shape[-1] :]
    if not reach < MAX_CELLS:
        raise InputError(
            f"inputs (xc and xt) reach |x| = {reach / points_per_unit:.3g}, beyond "
            f"{MAX_CELLS / points_per_unit:.3g}, where float64 cannot resolve the grid spacing "
            f"1/{points_per_unit:g}; re-centre or rescale the inputs"
        )
    if not math.isfinite(low[0]):
        raise InputError("mask must mark at least one point of x as counting, got none")
    resolution = torch.finfo(x.dtype).eps * reach
    if resolution > RESOLVED_FRACTION:
        warnings.warn(
            f"{x.dtype} inputs reach |x| = {reach / points_per_unit:.3g}, where they resolve "
            f"positions to only {resolution:.2g} of a grid cell (spacing "
            f"1/{points_per_unit:g}); predictions lose accuracy and exact lattice-shift "
            "equivariance. Re-centre the inputs near the origin, or use float64.",
            stacklevel=2,
        )
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
    anchor, offset = torch.tensor([anchor, offset], dtype=torch.float64, device=x.device)
    return LatticeGrid(anchor, offset, shape, points_per_unit)


class SetConv(nn.Module):
    """Gaussian set convolution with a learnable lengthscale.

    Args:
        dim_x: Input dimension ``dx`` (1 to 3).
        init_lengthscale: Initial lengthscale, typically twice the grid spacing.
        isotropic: One lengthscale shared by every dimension (rotation-invariant weights)
            instead of one per dimension.
        banded: Weights computed only in a window around each point and zero beyond
            ``TRUNCATION_RADIUS`` lengthscales (see the module docstring), instead of over the
            whole grid. A plain attribute: it may be switched after construction.

    Attributes:
        window_multiple: Window widths are rounded up to multiples of this
            (``WINDOW_MULTIPLE``; :func:`widen_windows` sets it for compiling).
    """

    def __init__(
        self, dim_x: int, init_lengthscale: float, isotropic: bool = False, banded: bool = True
    ):
        super().__init__()
        if not 1 <= dim_x <= len(GRID_LETTERS):
            raise InputError(f"set convolutions support 1 to 3 input dimensions, got {dim_x}")
        self.dim_x = dim_x
        self.banded = banded
        self.window_multiple = WINDOW_MULTIPLE
        num_lengthscales = 1 if isotropic else dim_x
        self.log_lengthscale = nn.Parameter(
            torch.full((num_lengthscales,), math.log(init_lengthscale))
        )

    def lengthscale(self, points_per_unit: float) -> Float[Tensor, " dx"]:
        """Lengthscale per dimension, in cells of spacing ``1 / points_per_unit``."""
        return self.log_lengthscale.exp().expand(self.dim_x) * points_per_unit

    @torch.compiler.disable
    def window(
        self, grid: LatticeGrid, lengthscale: Sequence[float] | None = None
    ) -> tuple[int, ...]:
        """Grid points per axis in the window of a point (all of them when not banded).

        Args:
            grid: The grid.
            lengthscale: :meth:`lengthscale` in cells of ``grid``, already read on the host;
                ``None``: read it here, a host synchronisation (and a graph break under
                ``torch.compile``).
        """
        if not self.banded:
            return grid.shape
        if lengthscale is None:
            lengthscale = self.lengthscale(grid.points_per_unit).detach().tolist()
        return tuple(
            window_width(length, size, self.window_multiple)
            for length, size in zip(lengthscale, grid.shape, strict=True)
        )

    def weights(
        self,
        cells: Float[Tensor, "batch n dx"],
        grid: LatticeGrid,
        window: tuple[int, ...] | None = None,
    ) -> list[Tensor]:
        """Per-dimension Gaussian weights ``[batch, n, size_d]`` between points and grid axes.

        Banded, they are computed only in each point's window (along axes it does not cover)
        and are zero beyond the truncation radius.

        Args:
            cells: Positions in cells from the grid's anchor (see :meth:`LatticeGrid.cells`).
            grid: The grid.
            window: :meth:`window`, if already known.
        """
        lengthscale = self.lengthscale(grid.points_per_unit)
        cells = cells.to(lengthscale.dtype)
        window = self.window(grid) if window is None else window
        weights = []
        for d, (size, width) in enumerate(zip(grid.shape, window, strict=True)):
            position = cells[..., d, None]
            points = torch.arange(width, device=cells.device)
            if width < size:
                # The window starts at the first grid point within the radius (kept on the grid).
                first = position - grid.offset[d] - TRUNCATION_RADIUS * lengthscale[d].detach()
                points = points + torch.floor(first).clamp(0, size - width).long()
            z = (position - (points.to(cells.dtype) + grid.offset[d])) / lengthscale[d]
            weight = torch.exp(-0.5 * z**2)
            if self.banded:
                weight = torch.where(z.abs() <= TRUNCATION_RADIUS, weight, 0.0)
            if width < size:
                # In place: scattering into a copy of the zeros writes the weights twice.
                weight = weight.new_zeros(*weight.shape[:-1], size).scatter_(-1, points, weight)
            weights.append(weight)
        return weights


def window_width(lengthscale: float, size: int, multiple: int = WINDOW_MULTIPLE) -> int:
    """Grid points in a window along an axis of ``size`` points (``lengthscale`` in cells).

    Any ``2 R lengthscale + 1`` consecutive points hold every grid point within the radius
    ``R = TRUNCATION_RADIUS`` lengthscales of a point; one more absorbs rounding. Rounded up
    to a multiple of ``multiple`` so that the width changes rarely as the lengthscale is
    learned; the whole axis where that is no smaller.
    """
    reach = 2 * TRUNCATION_RADIUS * lengthscale
    if not reach < size:  # also a non-finite lengthscale
        return size
    return min(size, multiple * math.ceil((math.floor(reach) + 3) / multiple))


def widen_windows(model: nn.Module, multiple: int = COMPILED_WINDOW_MULTIPLE) -> None:
    """Rounds the windows of every set convolution of ``model`` up to multiples of ``multiple``.

    For compiling (see :data:`COMPILED_WINDOW_MULTIPLE`). A wider window only adds weights
    beyond the truncation radius, which are zero: nothing the model computes changes.
    """
    for module in model.modules():
        if isinstance(module, SetConv):
            module.window_multiple = multiple


class SetConvEncoder(SetConv):
    """Points to grid: a density channel and the density-normalised outputs."""

    def forward(
        self,
        xc: Float[Tensor, "batch nc dx"],
        yc: Float[Tensor, "batch nc dy"],
        grid: LatticeGrid,
        mask: Bool[Tensor, "batch nc"] | None = None,
        window: tuple[int, ...] | None = None,
    ) -> Float[Tensor, "batch *grid dy+1"]:
        """Encodes the context set on ``grid`` (channels last, in the module's dtype).

        Args:
            xc: Context inputs.
            yc: Context outputs.
            grid: The grid to encode on.
            mask: Which context points count; the others contribute nothing, as if absent,
                and may hold any finite value. ``None``: every point counts.
            window: :meth:`SetConv.window`, if already known.
        """
        cells = grid.cells(xc)
        yc = yc.to(self.log_lengthscale.dtype)
        values = torch.cat([torch.ones_like(yc[..., :1]), yc], dim=-1)
        if mask is not None:
            # Zero weight for padding; its position is moved to the anchor to keep it finite.
            cells = torch.where(mask[..., None], cells, 0.0)
            values = torch.where(mask[..., None], values, 0.0)
        letters = GRID_LETTERS[: self.dim_x]
        spec = ",".join(f"bn{g}" for g in letters) + f",bnc->b{letters}c"
        h = torch.einsum(spec, *self.weights(cells, grid, window), values)
        density, values = h[..., :1], h[..., 1:]
        return torch.cat([density, values / (density + DENSITY_EPS)], dim=-1)


class SetConvDecoder(SetConv):
    """Grid to points: a Gaussian-weighted sum of grid features at each target."""

    def forward(
        self,
        grid: LatticeGrid,
        h: Float[Tensor, "batch *grid channels"],
        xt: Float[Tensor, "batch nt dx"],
        window: tuple[int, ...] | None = None,
    ) -> Float[Tensor, "batch nt channels"]:
        """Reads the grid features ``h`` (channels last) at the targets ``xt``.

        ``window``: :meth:`SetConv.window`, if already known.
        """
        letters = GRID_LETTERS[: self.dim_x]
        spec = ",".join(f"bt{g}" for g in letters) + f",b{letters}c->btc"
        return torch.einsum(spec, *self.weights(grid.cells(xt), grid, window), h)
