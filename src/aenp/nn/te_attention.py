"""Translation-equivariant multi-head attention (Ashman et al., ICML 2024).

Attention logits are an MLP of the per-head dot products ``q_i · k_j`` and of the input
difference ``x_i − x_j``, so the layer sees inputs only through differences and is exactly
equivariant to translations of every input.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor, nn

from aenp.errors import InputError


class PairwiseKernel(nn.Module):
    """MLP of ``(q_i · k_j per head, x_i − x_j)`` giving one attention logit per head.

    Works on ``[channels, batch, nq, nk]``: channels lead, so each layer is one matrix product
    over the flattened pairs and no hidden pairwise tensor is ever permuted or copied. The
    differences ``x_i − x_j`` join the dot products as ``dx`` more input channels, so the first
    layer, bias included, is one matrix product too: no pass over its hidden output adds them,
    and none in backward sums its gradient to them.

    Differences are measured in units of ``lengthscale``: at initialisation the first layer's
    ramps bend over about one such unit, and training moves them at a rate proportional to its
    inverse. Set it near the finest lengthscale of the data, or the MLP spends most of a short
    training run learning to resolve it.

    Args:
        num_heads: Number of heads (input dot products and output logits).
        dim_x: Input dimension ``dx``.
        hidden: Hidden widths (at least one layer).
        lengthscale: Unit of ``x_i − x_j`` for the MLP, in input units.
    """

    def __init__(
        self, num_heads: int, dim_x: int, hidden: tuple[int, ...], lengthscale: float = 1.0
    ):
        super().__init__()
        if not hidden:
            raise InputError("the attention kernel needs at least one hidden layer")
        if not 0 < lengthscale < math.inf:
            raise InputError(f"the kernel's lengthscale must be positive and finite: {lengthscale}")
        self.lengthscale = lengthscale
        widths = [*hidden, num_heads]
        self.dots_in = nn.Linear(num_heads, hidden[0])
        self.x_in = nn.Linear(dim_x, hidden[0], bias=False)
        self.layers = nn.ModuleList(nn.Linear(w_in, w_out) for w_in, w_out in pairwise(widths))

    def forward(
        self,
        dots: Float[Tensor, "heads batch nq nk"],
        xq: Float[Tensor, "batch nq dx"],
        xk: Float[Tensor, "batch nk dx"],
    ) -> Float[Tensor, "heads batch nq nk"]:
        """Attention logits."""
        differences = (xq[:, :, None, :] - xk[:, None, :, :]) / self.lengthscale
        inputs = torch.cat([dots, differences.permute(3, 0, 1, 2)])  # [heads + dx, *pairs]
        weight = torch.cat([self.dots_in.weight, self.x_in.weight], dim=1)
        h = torch.addmm(self.dots_in.bias[:, None], weight, inputs.flatten(1))
        h = h.view(weight.shape[0], *dots.shape[1:])
        for layer in self.layers:
            h = _leading_linear(layer, F.relu(h))
        return h


def _leading_linear(layer: nn.Linear, h: Tensor) -> Tensor:
    """Applies ``layer`` along dimension 0 of ``[channels, *pairs]``: one matrix product."""
    out = torch.addmm(layer.bias[:, None], layer.weight, h.flatten(1))
    return out.view(layer.out_features, *h.shape[1:])


class TEMultiHeadAttention(nn.Module):
    """Multi-head attention whose logits depend on token similarity and ``x_i − x_j``.

    Attending to an empty set gives zeros. Keys may be masked: masked keys have exactly no
    influence, and a query whose keys are all masked gets what attending to an empty set gives.

    Args:
        embed_dim: Token width.
        num_heads: Number of heads; must divide ``embed_dim``.
        dim_x: Input dimension ``dx``.
        kernel_hidden: Hidden widths of the :class:`PairwiseKernel`.
        kernel_lengthscale: Unit of ``x_i − x_j`` for the :class:`PairwiseKernel`.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dim_x: int,
        kernel_hidden: tuple[int, ...],
        kernel_lengthscale: float = 1.0,
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise InputError(f"num_heads ({num_heads}) must divide embed_dim ({embed_dim})")
        self.num_heads = num_heads
        self.scale = (embed_dim // num_heads) ** -0.5
        self.to_q = nn.Linear(embed_dim, embed_dim, bias=False)
        self.to_kv = nn.Linear(embed_dim, 2 * embed_dim, bias=False)
        self.to_out = nn.Linear(embed_dim, embed_dim)
        self.kernel = PairwiseKernel(num_heads, dim_x, kernel_hidden, kernel_lengthscale)

    def forward(
        self,
        zq: Float[Tensor, "batch nq embed"],
        zk: Float[Tensor, "batch nk embed"],
        xq: Float[Tensor, "batch nq dx"],
        xk: Float[Tensor, "batch nk dx"],
        key_mask: Bool[Tensor, "batch nk"] | None = None,
    ) -> Float[Tensor, "batch nq embed"]:
        """Queries ``zq`` at ``xq`` attend to tokens ``zk`` at ``xk`` (where ``key_mask``)."""
        # Heads lead every pairwise tensor (see PairwiseKernel).
        q = rearrange(self.to_q(zq) * self.scale, "b n (h d) -> h b n d", h=self.num_heads)
        k, v = rearrange(self.to_kv(zk), "b n (two h d) -> two h b n d", two=2, h=self.num_heads)
        logits = self.kernel(q @ k.transpose(-1, -2), xq, xk)
        if key_mask is None:
            out = torch.softmax(logits, dim=-1) @ v
        else:
            # The lowest finite logit gives weight exactly 0 beside any valid key, and no NaN
            # (a uniform average, then zeroed) where a task has none.
            key_mask = key_mask[None, :, None, :]
            logits = logits.masked_fill(~key_mask, torch.finfo(logits.dtype).min)
            out = (torch.softmax(logits, dim=-1) @ v) * key_mask.any(dim=-1, keepdim=True)
        return self.to_out(rearrange(out, "h b n d -> b n (h d)"))
