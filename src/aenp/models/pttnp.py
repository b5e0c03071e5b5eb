"""Pseudo-token transformer neural processes (PT-TNP) and their translation-equivariant form.

A fixed number ``M`` of learned pseudo-tokens attend to the context, attend to each other, and
the targets attend to them (perceiver-style), so the cost grows as ``nc·M + M² + nt·M`` rather
than ``nc²``: 2-D tasks with thousands of context points fit in memory.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from aenp.models.backbone import Backbone
from aenp.models.tnp import embed_tokens
from aenp.nn.attention import AttentionBlock, MultiHeadAttention
from aenp.nn.fixed_inputs import InjectionPoint
from aenp.nn.mlp import MLP
from aenp.nn.te_attention import TEMultiHeadAttention


class PTLayer(nn.Module):
    """Pseudo-tokens ← context, pseudo-tokens ← pseudo-tokens, targets ← pseudo-tokens.

    The backbone calls ``gather``, ``mix`` and ``read`` in that order.
    """

    def __init__(self, make_attention: Callable[[], nn.Module], embed_dim: int, ff_dim: int):
        super().__init__()
        self.gather = AttentionBlock(make_attention(), embed_dim, ff_dim, cross=True)
        self.mix = AttentionBlock(make_attention(), embed_dim, ff_dim, cross=False)
        self.read = AttentionBlock(make_attention(), embed_dim, ff_dim, cross=True)


class PTTNPBackbone(Backbone):
    """Non-equivariant PT-TNP: tokens embed ``(x, y)``; pseudo-tokens are learned vectors.

    Args:
        dim_x: Input dimension ``dx``.
        dim_y: Output dimension ``dy``.
        embed_dim: Token width.
        num_heads: Attention heads.
        num_layers: Layers (each: gather, mix, read).
        ff_dim: Hidden width of the feed-forward networks.
        num_pseudo_tokens: Number ``M`` of pseudo-tokens.
    """

    def __init__(
        self,
        dim_x: int,
        dim_y: int,
        embed_dim: int,
        num_heads: int,
        num_layers: int,
        ff_dim: int,
        num_pseudo_tokens: int,
    ):
        super().__init__()
        self.token_encoder = MLP(dim_x + dim_y + 1, embed_dim, (embed_dim, embed_dim))
        self.pseudo_tokens = nn.Parameter(torch.randn(num_pseudo_tokens, embed_dim))
        self.layers = nn.ModuleList(
            PTLayer(lambda: MultiHeadAttention(embed_dim, num_heads), embed_dim, ff_dim)
            for _ in range(num_layers)
        )
        self.head = MLP(embed_dim, 2 * dim_y, (embed_dim, embed_dim))

    def forward(
        self,
        xc: Float[Tensor, "batch nc dx"],
        yc: Float[Tensor, "batch nc dy"],
        xt: Float[Tensor, "batch nt dx"],
        context_mask: Bool[Tensor, "batch nc"] | None = None,
    ) -> Float[Tensor, "batch nt 2*dy"]:
        """Target features for the likelihood; masked context points are ignored."""
        zc, zt = embed_tokens(self.token_encoder, yc, xt, xc)
        u = self.pseudo_tokens.expand(xc.shape[0], -1, -1)
        for layer in self.layers:
            u = layer.gather(u, zc, key_mask=context_mask)
            u = layer.mix(u)
            zt = layer.read(zt, u)
        return self.head(zt)


class TEPTTNPBackbone(InjectionPoint, Backbone):
    """Translation-equivariant PT-TNP: pseudo-tokens sit at learned offsets from the context.

    Every input is expressed relative to the mean (unmasked) context input (for an empty
    context, to each target itself, so the prediction is the same everywhere), pseudo-tokens
    sit at learned offsets from it, and attention sees positions only through differences: the
    model is exactly translation equivariant. Fixed inputs (see :func:`aenp.approximate`) are added
    to the pseudo-tokens at their absolute locations; with an empty context those locations
    are undefined and the model predicts as its strict self.

    Args:
        dim_x: Input dimension ``dx``.
        dim_y: Output dimension ``dy``.
        embed_dim: Token width.
        num_heads: Attention heads.
        num_layers: Layers (each: gather, mix, read).
        ff_dim: Hidden width of the feed-forward networks.
        num_pseudo_tokens: Number ``M`` of pseudo-tokens.
        kernel_hidden: Hidden widths of the attention-logit MLP.
        offset_scale: Spread of the initial pseudo-token offsets, in input units.
        kernel_lengthscale: Unit in which the attention-logit MLP measures ``x_i − x_j`` (see
            :class:`~aenp.nn.te_attention.PairwiseKernel`).
    """

    def __init__(
        self,
        dim_x: int,
        dim_y: int,
        embed_dim: int,
        num_heads: int,
        num_layers: int,
        ff_dim: int,
        num_pseudo_tokens: int,
        kernel_hidden: tuple[int, ...],
        offset_scale: float,
        kernel_lengthscale: float = 1.0,
    ):
        super().__init__(position_dims=dim_x, width=embed_dim)
        self.token_encoder = MLP(dim_y + 1, embed_dim, (embed_dim, embed_dim))
        self.pseudo_tokens = nn.Parameter(torch.randn(num_pseudo_tokens, embed_dim))
        self.pseudo_offsets = nn.Parameter(offset_scale * torch.randn(num_pseudo_tokens, dim_x))
        self.layers = nn.ModuleList(
            PTLayer(
                lambda: TEMultiHeadAttention(
                    embed_dim, num_heads, dim_x, kernel_hidden, kernel_lengthscale
                ),
                embed_dim,
                ff_dim,
            )
            for _ in range(num_layers)
        )
        self.head = MLP(embed_dim, 2 * dim_y, (embed_dim, embed_dim))

    def forward(
        self,
        xc: Float[Tensor, "batch nc dx"],
        yc: Float[Tensor, "batch nc dy"],
        xt: Float[Tensor, "batch nt dx"],
        context_mask: Bool[Tensor, "batch nc"] | None = None,
    ) -> Float[Tensor, "batch nt 2*dy"]:
        """Target features for the likelihood; masked context points are ignored."""
        batch_size = xc.shape[0]
        xu = self.pseudo_offsets.expand(batch_size, -1, -1)
        u = self.pseudo_tokens.expand(batch_size, -1, -1)
        if context_mask is None:
            has_context = xc.shape[1] > 0
            centre = xc.mean(dim=1, keepdim=True) if has_context else xt
            if self.fixed_inputs is not None and has_context:
                u = u + self.fixed_inputs(centre + xu)
        else:
            # Per task, as above: the masked mean, or the targets themselves with no context.
            has_context = context_mask.any(dim=1)[:, None, None]
            count = context_mask.sum(dim=1)[:, None, None].clamp(min=1)
            mean = torch.where(context_mask[..., None], xc, 0.0).sum(dim=1, keepdim=True) / count
            centre = torch.where(has_context, mean, xt)
            if self.fixed_inputs is not None:
                u = u + torch.where(has_context, self.fixed_inputs(mean + xu), 0.0)
        xc, xt = xc - centre[:, :1], xt - centre
        zc, zt = embed_tokens(self.token_encoder, yc, xt)
        for layer in self.layers:
            u = layer.gather(u, zc, xq=xu, xk=xc, key_mask=context_mask)
            u = layer.mix(u, xq=xu, xk=xu)
            zt = layer.read(zt, u, xq=xt, xk=xu)
        return self.head(zt)
