"""A regular grid of points shared by every task of a batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor


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
