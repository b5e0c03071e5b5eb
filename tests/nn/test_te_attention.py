"""Translation-equivariant attention against a dense computation over every pair of points."""

import math

import pytest
import torch
import torch.nn.functional as F

from aenp.errors import InputError
from aenp.nn.te_attention import TEMultiHeadAttention


def te_attention_over_pairs(attention, zq, zk, xq, xk, lengthscale=1.0):
    """The layer's output with the pairwise differences ``(x_i − x_j) / lengthscale``."""
    embed_dim = zq.shape[-1]
    head_dim = embed_dim // attention.num_heads
    kernel = attention.kernel
    w_q = attention.to_q.weight
    w_k, w_v = attention.to_kv.weight[:embed_dim], attention.to_kv.weight[embed_dim:]
    rows = [slice(h * head_dim, (h + 1) * head_dim) for h in range(attention.num_heads)]
    # Dot products of every head, channels last: [batch, nq, nk, heads].
    dots = torch.stack(
        [(zq @ w_q[r].T) @ (zk @ w_k[r].T).transpose(-1, -2) for r in rows], dim=-1
    ) / math.sqrt(head_dim)
    differences = (xq[:, :, None, :] - xk[:, None, :, :]) / lengthscale
    hidden = F.linear(dots, kernel.dots_in.weight, kernel.dots_in.bias)
    hidden = hidden + differences @ kernel.x_in.weight.T
    for layer in kernel.layers:
        hidden = F.linear(F.relu(hidden), layer.weight, layer.bias)
    heads = [torch.softmax(hidden[..., h], dim=-1) @ (zk @ w_v[r].T) for h, r in enumerate(rows)]
    return F.linear(torch.cat(heads, dim=-1), attention.to_out.weight, attention.to_out.bias)


@pytest.mark.parametrize("lengthscale", [1.0, 0.03])
def test_matches_a_dense_computation_over_pairs(lengthscale):
    torch.manual_seed(0)
    attention = TEMultiHeadAttention(
        embed_dim=8, num_heads=2, dim_x=2, kernel_hidden=(6, 5), kernel_lengthscale=lengthscale
    ).double()
    batch, nq, nk = 3, 4, 5
    zq, zk = torch.randn(batch, nq, 8).double(), torch.randn(batch, nk, 8).double()
    xq, xk = torch.randn(batch, nq, 2).double(), torch.randn(batch, nk, 2).double()
    inputs = [t.requires_grad_() for t in (zq, zk, xq, xk)]
    expected = te_attention_over_pairs(attention, zq, zk, xq, xk, lengthscale)
    out = attention(zq, zk, xq, xk)
    torch.testing.assert_close(out, expected)
    # Gradients too, the positions' included.
    wrt = [*inputs, *attention.parameters()]
    weights = torch.randn_like(out)
    grads = torch.autograd.grad((out * weights).sum(), wrt)
    expected_grads = torch.autograd.grad((expected * weights).sum(), wrt)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("lengthscale", [0.0, -0.1, math.inf, math.nan])
def test_a_kernel_lengthscale_that_is_not_positive_and_finite_is_refused(lengthscale):
    with pytest.raises(InputError, match="lengthscale must be positive and finite"):
        TEMultiHeadAttention(8, 2, 1, (4,), kernel_lengthscale=lengthscale)


def test_num_heads_that_do_not_divide_embed_dim_are_refused():
    with pytest.raises(InputError, match=r"num_heads \(3\) must divide embed_dim \(8\)"):
        TEMultiHeadAttention(embed_dim=8, num_heads=3, dim_x=1, kernel_hidden=(4,))


def test_masked_keys_are_ignored_and_no_keys_give_the_empty_set_answer():
    """Each task attends to its unmasked keys only; a task with none gets the empty-set output.

    Gradients stay finite where a task has no key.
    """
    torch.manual_seed(0)
    attention = TEMultiHeadAttention(embed_dim=8, num_heads=2, dim_x=2, kernel_hidden=(6,))
    attention = attention.double()
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    zq, zk = torch.randn(3, 4, 8).double(), torch.randn(3, 5, 8).double().requires_grad_()
    xq, xk = torch.randn(3, 4, 2).double(), torch.randn(3, 5, 2).double()
    out = attention(zq, zk, xq, xk, key_mask=mask)
    for i, keep in enumerate(mask):
        task = slice(i, i + 1)
        alone = attention(zq[task], zk[task, keep], xq[task], xk[task, keep])
        torch.testing.assert_close(out[task], alone)
    out.sum().backward()
    assert bool(torch.isfinite(zk.grad).all())
    assert all(bool(torch.isfinite(p.grad).all()) for p in attention.parameters())
