"""Regular grids: the grid of points shared by every task of a batch, and what counts as regular."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

GRID_SPACING_RTOL = 1e-4
"""Relative tolerance within which a grid axis counts as evenly spaced."""
ROUNDING_ULPS = 4
"""Units in the last place (of an axis's largest value) its steps may differ by in rounding."""


def is_evenly_spaced(axis: Float[Tensor, " size"]) -> bool:
    """Whether ``axis`` increases in steps equal to within :data:`GRID_SPACING_RTOL`.

    Or equal to within the rounding of the axis's dtype: steps small against the values (hours
    within decades of time, in float32) differ by up to a few units in the last place of the
    largest value. A single point counts as evenly spaced.
    """
    if len(axis) < 2:
        return True
    steps = axis.diff()
    rounding = ROUNDING_ULPS * torch.finfo(axis.dtype).eps * float(axis.abs().max())
    return bool((steps > 0).all()) and torch.allclose(
        steps, steps.mean().expand_as(steps), rtol=GRID_SPACING_RTOL, atol=rounding
    )


@dataclass(frozen=True)
class Grid:
    """A regular grid shared by every task of a batch.

    Attributes:
        axes: One tensor of coordinates ``[size_d]`` per input dimension.
    """

    axes: tuple[Tensor, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        """Number of grid points along each input dimension."""
        return tuple(len(a) for a in self.axes)

    def points(self) -> Float[Tensor, "*grid dx"]:
        """Coordinates of every grid point."""
        return torch.stack(torch.meshgrid(*self.axes, indexing="ij"), dim=-1)
