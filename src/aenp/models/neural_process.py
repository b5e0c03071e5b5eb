"""The neural process: a backbone mapping ``(xc, yc, xt)`` to features, then a likelihood."""

from __future__ import annotations

from typing import Any

from jaxtyping import Float
from torch import Tensor, nn
from torch.distributions import Normal

from aenp.data.batch import Batch, GridBatch
from aenp.data.grid import Grid
from aenp.errors import InputError, InputTypeError


class NeuralProcess(nn.Module):
    """A conditional neural process with a factorised Gaussian predictive.

    Args:
        backbone: Module mapping ``(xc, yc, xt)`` to features ``[batch, nt, 2 * dy]``.
        likelihood: Module mapping those features to a distribution over ``yt``.
        dim_x: Input dimension ``dx``.
        dim_y: Output dimension ``dy``.
        config: How the model was built (registry key and hyper-parameters), for saving.
    """

    def __init__(
        self,
        backbone: nn.Module,
        likelihood: nn.Module,
        dim_x: int,
        dim_y: int,
        config: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.likelihood = likelihood
        self.dim_x = dim_x
        self.dim_y = dim_y
        self.config = config if config is not None else {}

    def forward(
        self,
        xc: Float[Tensor, "batch nc dx"] | Batch | GridBatch,
        yc: Float[Tensor, "batch nc dy"] | None = None,
        xt: Float[Tensor, "batch nt dx"] | None = None,
    ) -> Normal:
        """Predictive distribution over ``yt``, ``[batch, nt, dy]``.

        Called as ``model(xc, yc, xt)`` or ``model(batch)``. Given a :class:`GridBatch`, the
        prediction has the grid's shape ``[batch, *grid, dy]``: convolutional models predict
        every cell; point-set models (transformers) predict the target cells, seen as points,
        and leave a standard normal elsewhere.
        """
        batch = xc if isinstance(xc, Batch | GridBatch) else Batch(xc, yc, xt)
        self._check(batch)
        if isinstance(batch, GridBatch) and hasattr(self.backbone, "forward_grid"):
            grid = Grid(batch.axes)
            z = self.backbone.forward_grid(
                batch.context_values(), batch.context_mask, grid, batch.extra_inputs
            )
            return self.likelihood(z)
        if isinstance(batch, GridBatch):
            # Point-set models see the context and target cells as points.
            points = batch.to_points()
            return batch.to_grid(self.likelihood(self.backbone(points.xc, points.yc, points.xt)))
        return self.likelihood(self.backbone(batch.xc, batch.yc, batch.xt))

    def _check(self, batch: Batch | GridBatch) -> None:
        """Names any mismatch between the batch and the model's dimensions or dtype."""
        if batch.dim_x != self.dim_x:
            raise InputError(
                f"inputs have dimension dx={batch.dim_x} but the model was built for "
                f"dim_x={self.dim_x}"
            )
        if batch.dim_y != self.dim_y:
            raise InputError(
                f"outputs have dimension dy={batch.dim_y} but the model was built for "
                f"dim_y={self.dim_y}"
            )
        dtype = next(self.parameters()).dtype
        if batch.dtype != dtype:
            raise InputTypeError(
                f"inputs are {batch.dtype} but the model's parameters are {dtype}; "
                f"cast one to match (e.g. model.to({batch.dtype}))"
            )
