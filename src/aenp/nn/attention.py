"""Multi-head attention and the transformer layers of a TNP."""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor, nn

from aenp.errors import InputError


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention; attending to an empty set gives zeros.

    Keys may be masked: masked keys have exactly no influence, and a query whose keys are all
    masked gets what attending to an empty set gives.

    Args:
        embed_dim: Token width.
        num_heads: Number of heads; must divide ``embed_dim``.
    """

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        if embed_dim % num_heads:
            raise InputError(f"num_heads ({num_heads}) must divide embed_dim ({embed_dim})")
        self.num_heads = num_heads
        self.to_q = nn.Linear(embed_dim, embed_dim, bias=False)
        self.to_kv = nn.Linear(embed_dim, 2 * embed_dim, bias=False)
        self.to_out = nn.Linear(embed_dim, embed_dim)

    def forward(
        self,
        zq: Float[Tensor, "batch nq embed"],
        zk: Float[Tensor, "batch nk embed"],
        key_mask: Bool[Tensor, "batch nk"] | None = None,
    ) -> Float[Tensor, "batch nq embed"]:
        """Queries ``zq`` attend to keys and values computed from ``zk`` (where ``key_mask``)."""
        q = rearrange(self.to_q(zq), "b n (h d) -> b h n d", h=self.num_heads)
        k, v = rearrange(self.to_kv(zk), "b n (two h d) -> two b h n d", two=2, h=self.num_heads)
        if key_mask is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            # A task with every key masked attends to all of them (no NaN), then is zeroed.
            any_key = key_mask.any(dim=-1)[:, None, None, None]
            attend = key_mask[:, None, None, :] | ~any_key
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend) * any_key
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class FeedForward(nn.Sequential):
    """Position-wise two-layer MLP of a transformer block."""

    def __init__(self, embed_dim: int, hidden_dim: int):
        super().__init__(
            nn.Linear(embed_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, embed_dim)
        )


class AttentionBlock(nn.Module):
    """Pre-LayerNorm attention followed by a feed-forward network, both residual.

    Args:
        attention: Attention module called as ``attention(zq, zk, **extra)``.
        embed_dim: Token width.
        ff_dim: Hidden width of the feed-forward network.
        cross: Cross-attention (queries attend to other tokens) rather than self-attention.
    """

    def __init__(self, attention: nn.Module, embed_dim: int, ff_dim: int, cross: bool):
        super().__init__()
        self.attention = attention
        self.norm_q = nn.LayerNorm(embed_dim)
        self.norm_k = nn.LayerNorm(embed_dim) if cross else None
        self.norm_ff = nn.LayerNorm(embed_dim)
        self.ff = FeedForward(embed_dim, ff_dim)

    def forward(
        self,
        zq: Float[Tensor, "batch nq embed"],
        zk: Float[Tensor, "batch nk embed"] | None = None,
        key_mask: Bool[Tensor, "batch nk"] | None = None,
        **extra: Tensor,
    ) -> Float[Tensor, "batch nq embed"]:
        """Updates the query tokens ``zq`` from ``zk`` (cross) or from themselves (self).

        Keys where ``key_mask`` is false (in self-attention: those query tokens) are ignored.
        """
        q = self.norm_q(zq)
        k = q if self.norm_k is None else self.norm_k(zk)
        z = zq + self.attention(q, k, key_mask=key_mask, **extra)
        return z + self.ff(self.norm_ff(z))
