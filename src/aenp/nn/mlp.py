"""Multi-layer perceptron acting on the last dimension."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from torch import nn


class MLP(nn.Sequential):
    """Linear layers with an activation between them (none after the last).

    Args:
        dim_in: Input features.
        dim_out: Output features.
        hidden: Widths of the hidden layers.
        activation: Activation module class placed between layers.
    """

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        hidden: Sequence[int] = (),
        activation: type[nn.Module] = nn.ReLU,
    ):
        widths = [dim_in, *hidden, dim_out]
        layers: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(pairwise(widths)):
            if i > 0:
                layers.append(activation())
            layers.append(nn.Linear(w_in, w_out))
        super().__init__(*layers)
        self.dim_in = dim_in
        self.dim_out = dim_out
