"""Transformer neural processes: the TNP and the translation-equivariant TE-TNP."""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from aenp.models.backbone import Backbone
from aenp.nn.attention import AttentionBlock, MultiHeadAttention
from aenp.nn.fixed_inputs import InjectionPoint
from aenp.nn.mlp import MLP
from aenp.nn.te_attention import TEMultiHeadAttention


def _flagged(y: Tensor, is_context: bool) -> Tensor:
    """Appends a channel that tells context tokens (1) from target tokens (0)."""
    flag = torch.full_like(y[..., :1], float(is_context))
    return torch.cat([y, flag], dim=-1)


def embed_tokens(
    encoder: nn.Module,
    yc: Float[Tensor, "batch nc dy"],
    xt: Float[Tensor, "batch nt dx"],
    xc: Float[Tensor, "batch nc dx"] | None = None,
) -> tuple[Float[Tensor, "batch nc embed"], Float[Tensor, "batch nt embed"]]:
    """Initial context tokens ``(y, 1)`` and target tokens ``(0, 0)``.

    Non-equivariant models pass ``xc``: their tokens also embed the inputs, ``(x, y, 1)`` and
    ``(x, 0, 0)``. Equivariant models see inputs only through differences, in attention.
    """
    placeholder = xt.new_zeros(*xt.shape[:-1], yc.shape[-1])
    if xc is None:
        return encoder(_flagged(yc, True)), encoder(_flagged(placeholder, False))
    zc = encoder(_flagged(torch.cat([xc, yc], dim=-1), True))
    return zc, encoder(_flagged(torch.cat([xt, placeholder], dim=-1), False))


class TNPLayer(nn.Module):
    """One TNP layer: context self-attention, then target→context cross-attention.

    The backbone calls ``context`` and then ``target``, since their arguments differ between
    the TNP and the TE-TNP.
    """

    def __init__(self, make_attention: Callable[[], nn.Module], embed_dim: int, ff_dim: int):
        super().__init__()
        self.context = AttentionBlock(make_attention(), embed_dim, ff_dim, cross=False)
        self.target = AttentionBlock(make_attention(), embed_dim, ff_dim, cross=True)


class TNPBackbone(Backbone):
    """Non-equivariant TNP: tokens embed ``(x, y)``; targets embed ``(x, 0)``.

    Args:
        dim_x: Input dimension ``dx``.
        dim_y: Output dimension ``dy``.
        embed_dim: Token width.
        num_heads: Attention heads.
        num_layers: Transformer layers.
        ff_dim: Hidden width of the feed-forward networks.
    """

    def __init__(
        self, dim_x: int, dim_y: int, embed_dim: int, num_heads: int, num_layers: int, ff_dim: int
    ):
        super().__init__()
        self.token_encoder = MLP(dim_x + dim_y + 1, embed_dim, (embed_dim, embed_dim))
        self.layers = nn.ModuleList(
            TNPLayer(lambda: MultiHeadAttention(embed_dim, num_heads), embed_dim, ff_dim)
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
        for layer in self.layers:
            zc = layer.context(zc, key_mask=context_mask)
            zt = layer.target(zt, zc, key_mask=context_mask)
        return self.head(zt)


class TETNPBackbone(InjectionPoint, Backbone):
    """Translation-equivariant TNP: tokens embed ``y`` only; inputs enter via ``x_i − x_j``.

    Fixed inputs (see :func:`aenp.approximate`) are added to the initial tokens.

    Args:
        dim_x: Input dimension ``dx``.
        dim_y: Output dimension ``dy``.
        embed_dim: Token width.
        num_heads: Attention heads.
        num_layers: Transformer layers.
        ff_dim: Hidden width of the feed-forward networks.
        kernel_hidden: Hidden widths of the attention-logit MLP.
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
        kernel_hidden: tuple[int, ...],
        kernel_lengthscale: float = 1.0,
    ):
        super().__init__(position_dims=dim_x, width=embed_dim)
        self.token_encoder = MLP(dim_y + 1, embed_dim, (embed_dim, embed_dim))
        self.layers = nn.ModuleList(
            TNPLayer(
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
        zc, zt = embed_tokens(self.token_encoder, yc, xt)
        if self.fixed_inputs is not None:
            t = self.fixed_inputs(torch.cat([xc, xt], dim=1))
            zc, zt = zc + t[:, : xc.shape[1]], zt + t[:, xc.shape[1] :]
        for layer in self.layers:
            zc = layer.context(zc, xq=xc, xk=xc, key_mask=context_mask)
            zt = layer.target(zt, zc, xq=xt, xk=xc, key_mask=context_mask)
        return self.head(zt)
