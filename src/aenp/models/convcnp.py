"""The convolutional conditional neural process (ConvCNP)."""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from aenp.errors import InputError
from aenp.grid import Grid
from aenp.models.backbone import Backbone
from aenp.nn.cnn import CONV
from aenp.nn.fixed_inputs import InjectionPoint
from aenp.nn.mlp import MLP
from aenp.nn.relaxed_conv import RelaxedConvNet
from aenp.nn.setconv import (
    DEFAULT_MAX_GRID_POINTS,
    LatticeGrid,
    SetConvDecoder,
    SetConvEncoder,
    grid_of_extent,
    lattice_extent,
)


def gridded_inputs(dim_x: int, channel_inputs: int) -> int:
    """Number of inputs laid on the grid when the last ``channel_inputs`` are data channels.

    Raises:
        ValueError: Unless ``0 <= channel_inputs < dim_x`` and the rest fit a CNN's grid.
    """
    if not 0 <= channel_inputs < dim_x:
        raise InputError(
            f"channel_inputs must lie in [0, dim_x={dim_x}) (one input at least is gridded), "
            f"got {channel_inputs}"
        )
    grid_dims = dim_x - channel_inputs
    if grid_dims > max(CONV):
        raise InputError(
            f"convolutions act on grids of at most {max(CONV)} dimensions, but dim_x={dim_x} "
            f"with channel_inputs={channel_inputs} grids {grid_dims}; feed inputs that are not "
            "grid dimensions (e.g. elevation) as data channels with channel_inputs"
        )
    return grid_dims


class ConvCNPBackbone(InjectionPoint, Backbone):
    """Set convolution to a lattice grid, a CNN on the grid, set convolution to the targets.

    Exactly equivariant to shifts of the gridded inputs by multiples of ``1 / points_per_unit``,
    and, with an isotropic lengthscale and a D4-equivariant CNN, to the rotations and
    reflections of the lattice (see :func:`aenp.nn.setconv.lattice_grid`). Positions may come
    in float64 for a float32 model: they are placed on the lattice in float64 first. Fixed
    inputs (see :func:`aenp.approximate`) enter as extra grid channels before the CNN; they are
    functions of the gridded inputs.

    The last ``channel_inputs`` input dimensions (e.g. surface elevation, known wherever one
    predicts) are not gridded: the set convolution carries their values at the context and
    target points to the grid as data channels, with their own density channel. The model is
    not equivariant to shifts of them.

    Args:
        dim_x: Input dimension ``dx``.
        dim_y: Output dimension ``dy``.
        cnn: Translation-equivariant CNN on ``[batch, channels, *grid]``; its attribute
            ``resolution_multiple`` fixes the grid sizes it accepts.
        channels: Channels of the CNN.
        points_per_unit: Grid density: the spacing is ``1 / points_per_unit`` and the points lie
            on its multiples or midway between them.
        margin: Extent of the grid beyond the data on each side.
        channel_inputs: Trailing input dimensions fed as data channels rather than gridded.
        max_grid_points: Largest grid a batch of point sets may ask for; larger ones are
            refused with an :class:`~aenp.errors.InputError` before anything is allocated.
        isotropic: One set-convolution lengthscale for every gridded dimension (needed for
            rotation equivariance) instead of one per dimension.
    """

    exact_positions = True
    takes_grids = True

    def __init__(
        self,
        dim_x: int,
        dim_y: int,
        cnn: nn.Module,
        channels: int,
        points_per_unit: float,
        margin: float,
        channel_inputs: int = 0,
        max_grid_points: int = DEFAULT_MAX_GRID_POINTS,
        isotropic: bool = False,
    ):
        grid_dims = gridded_inputs(dim_x, channel_inputs)
        # Fixed inputs vary over the gridded inputs, along which the CNN is equivariant.
        super().__init__(position_dims=grid_dims, width=channels, input_dims=dim_x)
        self.grid_dims = grid_dims
        self.channel_inputs = channel_inputs
        self.points_per_unit = points_per_unit
        self.margin = margin
        self.max_grid_points = max_grid_points
        init_lengthscale = 2 / points_per_unit
        self.encoder = SetConvEncoder(grid_dims, init_lengthscale, isotropic)
        self.channel_encoder = (
            SetConvEncoder(grid_dims, init_lengthscale, isotropic) if channel_inputs else None
        )
        data_channels = dim_y + 1 + (channel_inputs + 1 if channel_inputs else 0)
        self.resize = nn.Linear(data_channels, channels)
        self.cnn = cnn
        self.decoder = SetConvDecoder(grid_dims, init_lengthscale, isotropic)
        self.head = MLP(channels, 2 * dim_y, (channels,))

    @property
    def resolution_multiple(self) -> int:
        """Every side of a grid is a multiple of this many cells: the CNN's."""
        return self.cnn.resolution_multiple

    def forward(
        self,
        xc: Float[Tensor, "batch nc dx"],
        yc: Float[Tensor, "batch nc dy"],
        xt: Float[Tensor, "batch nt dx"],
        context_mask: Bool[Tensor, "batch nc"] | None = None,
    ) -> Float[Tensor, "batch nt 2*dy"]:
        """Target features for the likelihood; masked context points are ignored."""
        gridded = self.grid_dims
        x = torch.cat([xc, xt], dim=1)
        # Which points of x count (padding neither places the grid nor carries data).
        mask = None
        if context_mask is not None:
            mask = torch.cat([context_mask, context_mask.new_ones(xt.shape[:2])], dim=1)
        grid, windows = self._geometry(x[..., :gridded], mask)
        h = self.encoder(xc[..., :gridded], yc, grid, context_mask, windows[0])
        if self.channel_encoder is not None:
            # Channel inputs are known at every point, context and target alike.
            values = x[..., gridded:].to(yc.dtype)
            extra = self.channel_encoder(x[..., :gridded], values, grid, mask, windows[1])
            h = torch.cat([h, extra], dim=-1)
        on_grid = self._grid_features(h, grid.absolute(h.device))
        return self.head(self.decoder(grid, on_grid, xt[..., :gridded], windows[-1]))

    @torch.compiler.disable
    def _geometry(
        self, x: Float[Tensor, "batch n gridded"], mask: Bool[Tensor, "batch n"] | None
    ) -> tuple[LatticeGrid, list[tuple[int, ...]]]:
        """The lattice grid of ``x`` and the set convolutions' windows on it.

        The windows of the encoder, the channel encoder (if any) and the decoder, in this
        order. Read on the host in one transfer (the extent and the lengthscales): the one host
        synchronisation of a forward pass. A compiled model runs this eagerly.
        """
        convs = [c for c in (self.encoder, self.channel_encoder, self.decoder) if c is not None]
        ppu = self.points_per_unit
        extent = lattice_extent(x, ppu, self.margin, mask)
        lengthscales = [c.lengthscale(ppu).detach().to(extent) for c in convs]
        values = torch.cat([extent, *lengthscales]).tolist()
        start = len(extent)
        grid = grid_of_extent(
            values[:start], x, ppu, self.margin, self.resolution_multiple, self.max_grid_points
        )
        windows = []
        for conv in convs:
            windows.append(conv.window(grid, values[start : start + conv.dim_x]))
            start += conv.dim_x
        return grid, windows

    def forward_grid(
        self,
        yc: Float[Tensor, "batch *grid dy"],
        context_mask: Bool[Tensor, " batch *grid"],
        grid: Grid,
        extra_inputs: Float[Tensor, "*grid de"] | None = None,
    ) -> Float[Tensor, "batch *grid 2*dy"]:
        """Features of every cell of a grid of data; the set convolutions are skipped.

        See :meth:`~aenp.models.backbone.Backbone.forward_grid`: ``grid`` holds the gridded
        inputs, and ``extra_inputs`` (the channel inputs) are needed exactly when the model has
        any.
        """
        multiple = self.resolution_multiple
        if any(size % multiple for size in grid.shape):
            raise InputError(
                f"grid of shape {grid.shape} must have a multiple of {multiple} cells along "
                f"every axis for this CNN; crop or pad the grid, or use fewer U-Net levels"
            )
        given = 0 if extra_inputs is None else extra_inputs.shape[-1]
        if len(grid.axes) != self.grid_dims or given != self.channel_inputs:
            raise InputError(
                f"this model grids {self.grid_dims} input(s) and takes {self.channel_inputs} as "
                f"channels, but the data have {len(grid.axes)} grid axes and {given} extra "
                "input(s)"
            )
        density = context_mask[..., None].to(yc.dtype)
        h = torch.cat([density, yc], dim=-1)
        if extra_inputs is not None:
            extra = extra_inputs.to(yc.dtype).expand(*yc.shape[:-1], given)
            h = torch.cat([h, torch.ones_like(density), extra], dim=-1)
        return self.head(self._grid_features(h, grid))

    def _grid_features(
        self, h: Float[Tensor, "batch *grid data_channels"], grid: Grid
    ) -> Float[Tensor, "batch *grid channels"]:
        """Density and data channels (plus fixed inputs) → CNN features, channels last."""
        h = self.resize(h)
        if self.fixed_inputs is not None:
            points = grid.points().to(h.dtype)
            h = h + self.fixed_inputs(points[None], num_tasks=h.shape[0])
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
        channel_inputs: int = 0,
        max_grid_points: int = DEFAULT_MAX_GRID_POINTS,
    ):
        super().__init__(
            dim_x, dim_y, cnn, channels, points_per_unit, margin, channel_inputs, max_grid_points
        )
        self.fixed_input_width = cnn.num_weights

    def _grid_features(
        self, h: Float[Tensor, "batch *grid data_channels"], grid: Grid
    ) -> Float[Tensor, "batch *grid channels"]:
        """Density and data channels → relaxed CNN (weights from fixed inputs), channels last."""
        h = self.resize(h)
        departures = None
        if self.fixed_inputs is not None:
            points = grid.points().to(h.dtype)
            departures = self.fixed_inputs(points[None], num_tasks=h.shape[0])
        return self.cnn(h.movedim(-1, 1), departures).movedim(1, -1)
