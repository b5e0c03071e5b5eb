"""The neural process: a backbone mapping ``(xc, yc, xt)`` to features, then a likelihood."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn
from torch.distributions import Normal

from aenp.batch import Batch, GridBatch
from aenp.errors import InputError, InputTypeError
from aenp.grid import Grid
from aenp.models.backbone import Backbone
from aenp.nn.fixed_inputs import injection_sites


class NeuralProcess(nn.Module):
    """A conditional neural process with a factorised Gaussian predictive.

    Inputs of any floating dtype are accepted and the prediction is in the model's dtype:
    values are cast to it, and so are positions, unless the backbone keeps them exact
    (:attr:`~aenp.models.backbone.Backbone.exact_positions`).

    Args:
        backbone: Maps ``(xc, yc, xt, context_mask)`` to features ``[batch, nt, 2 * dy]``
            (see :class:`~aenp.models.backbone.Backbone`).
        likelihood: Module mapping those features to a distribution over ``yt``.
        dim_x: Input dimension ``dx``.
        dim_y: Output dimension ``dy``.
        config: How the model was built (registry key and hyper-parameters), for saving; see
            :attr:`config`.

    Raises:
        TypeError: If ``backbone`` is not a :class:`~aenp.models.backbone.Backbone`.
    """

    def __init__(
        self,
        backbone: Backbone,
        likelihood: nn.Module,
        dim_x: int,
        dim_y: int,
        config: dict[str, Any] | None = None,
    ):
        if not isinstance(backbone, Backbone):
            raise InputTypeError(
                "backbone must subclass aenp.models.backbone.Backbone, got "
                f"{type(backbone).__name__}"
            )
        super().__init__()
        self.backbone = backbone
        self.likelihood = likelihood
        self.dim_x = dim_x
        self.dim_y = dim_y
        self.build_config = config if config is not None else {}

    @property
    def config(self) -> dict[str, Any]:
        """How to rebuild the model, as :func:`aenp.save` writes it.

        The build config (registry key, ``dim_x``, ``dim_y`` and ``hparams``) and, once the
        model has fixed inputs, ``approximate``: the arguments of :func:`aenp.approximate` that
        attached them.
        """
        sites = [site for site in injection_sites(self) if site.fixed_inputs is not None]
        if not sites:
            return dict(self.build_config)
        (site,) = sites
        fixed_inputs = site.fixed_inputs
        domain = None
        if fixed_inputs.bounds is not None:
            # The inputs past the site's positions are data channels, which fixed inputs ignore.
            channels = [[None, None]] * (site.input_dims - site.position_dims)
            domain = [list(pair) for pair in fixed_inputs.bounds + channels]
        approximate = {
            "num_fixed_inputs": fixed_inputs.num_fixed_inputs,
            "p_drop": fixed_inputs.p_drop,
            "domain": domain,
            "hidden": list(fixed_inputs.hidden),
        }
        return {**self.build_config, "approximate": approximate}

    def forward(
        self,
        xc: Float[Tensor, "batch nc dx"] | Batch | GridBatch,
        yc: Float[Tensor, "batch nc dy"] | None = None,
        xt: Float[Tensor, "batch nt dx"] | None = None,
        context_mask: Bool[Tensor, "batch nc"] | None = None,
    ) -> Normal:
        """Predictive distribution over ``yt``, ``[batch, nt, dy]``.

        Called as ``model(xc, yc, xt)``, optionally with ``context_mask`` (see
        :class:`Batch`), or as ``model(batch)``, which is :meth:`NeuralProcess.forward_batch`.
        """
        if not isinstance(xc, Batch | GridBatch):
            return self.forward_batch(Batch(xc, yc, xt, context_mask=context_mask))
        if context_mask is not None:
            raise InputError(
                "context_mask is given beside a batch; a batch carries its own mask "
                "(Batch.context_mask)"
            )
        return self.forward_batch(xc)

    def forward_batch(self, batch: Batch | GridBatch) -> Normal:
        """Predictive distribution over the targets of a batch.

        For a :class:`Batch` it is ``[batch, nt, dy]``. For a :class:`GridBatch` it has the
        grid's shape ``[batch, *grid, dy]``: convolutional models predict every cell;
        point-set models (transformers) predict the target cells, seen as points, and leave a
        standard normal elsewhere.
        """
        if not isinstance(batch, Batch | GridBatch):
            raise InputTypeError(
                f"batch must be an aenp.Batch or aenp.GridBatch, got {type(batch).__name__}"
            )
        parameter = next(self.parameters())
        self._check(batch, parameter.device)
        dtype = parameter.dtype
        if isinstance(batch, GridBatch) and self.backbone.takes_grids:
            extra = batch.extra_inputs
            z = self.backbone.forward_grid(
                batch.context_values().to(dtype),
                batch.context_mask,
                Grid(batch.axes),
                None if extra is None else extra.to(dtype),
            )
            return self.likelihood(z)
        if isinstance(batch, GridBatch):
            # Point-set models see the context and target cells as points.
            points = batch.to_points()
            return batch.to_grid(self.likelihood(self._point_features(points, dtype)))
        return self.likelihood(self._point_features(batch, dtype))

    def _point_features(
        self, batch: Batch, dtype: torch.dtype
    ) -> Float[Tensor, "batch nt features"]:
        """The backbone's features, with the batch cast to ``dtype`` (see the class docstring)."""
        xc, xt = batch.xc, batch.xt
        if not self.backbone.exact_positions:
            xc, xt = xc.to(dtype), xt.to(dtype)
        return self.backbone(xc, batch.yc.to(dtype), xt, context_mask=batch.context_mask)

    def _check(self, batch: Batch | GridBatch, device: torch.device) -> None:
        """Names any mismatch between the batch and the model's dimensions or ``device``."""
        if batch.device != device:
            raise InputError(
                f"the batch is on {batch.device} but the model on {device}: move one to the "
                "other's device with .to(...)"
            )
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
