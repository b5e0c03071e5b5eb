"""Heteroscedastic Gaussian likelihood."""

from __future__ import annotations

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from torch.distributions import Normal

from aenp.errors import InputError


class HeteroscedasticNormal(nn.Module):
    """Maps decoder outputs to a factorised Normal with a floor on its standard deviation.

    Args:
        min_std: Smallest standard deviation the model can predict.
    """

    def __init__(self, min_std: float = 1e-3):
        super().__init__()
        if not min_std > 0:  # also refuses NaN
            raise InputError(f"min_std must be positive, got {min_std}")
        self.min_std = min_std

    def forward(self, z: Float[Tensor, "batch *targets features"]) -> Normal:
        """The first half of the features is the mean, the second the (raw) spread.

        Args:
            z: Features ``[batch, nt, 2 dy]`` of point targets, or ``[batch, *grid, 2 dy]``
                of every cell of a grid.
        """
        mean, raw_std = z.chunk(2, dim=-1)
        # The scale is positive by construction; validation would cost a host sync per call.
        return Normal(mean, self.min_std + F.softplus(raw_std), validate_args=False)
