"""Multi-head attention against attention written out one head at a time."""

import math

import pytest
import torch

from aenp.errors import InputError
from aenp.nn.attention import AttentionBlock, MultiHeadAttention


def attention_head_by_head(attention, zq, zk):
    """Scaled dot-product attention computed per head from the layer's weights alone."""
    embed_dim = zq.shape[-1]
    head_dim = embed_dim // attention.num_heads
    w_q = attention.to_q.weight
    w_k, w_v = attention.to_kv.weight[:embed_dim], attention.to_kv.weight[embed_dim:]
    heads = []
    for h in range(attention.num_heads):
        rows = slice(h * head_dim, (h + 1) * head_dim)
        q, k, v = zq @ w_q[rows].T, zk @ w_k[rows].T, zk @ w_v[rows].T
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)
        heads.append(weights @ v)
    return torch.cat(heads, dim=-1) @ attention.to_out.weight.T + attention.to_out.bias


def test_matches_attention_written_out_head_by_head():
    torch.manual_seed(0)
    attention = MultiHeadAttention(embed_dim=8, num_heads=2).double()
    zq, zk = torch.randn(3, 4, 8, dtype=torch.float64), torch.randn(3, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(attention(zq, zk), attention_head_by_head(attention, zq, zk))


def test_num_heads_that_do_not_divide_embed_dim_are_refused():
    with pytest.raises(InputError, match=r"num_heads \(3\) must divide embed_dim \(8\)"):
        MultiHeadAttention(embed_dim=8, num_heads=3)


KEY_MASK = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
"""Some keys masked, all masked, none masked."""


def test_masked_keys_are_ignored_and_no_keys_give_the_empty_set_answer():
    """Each task attends to its unmasked keys only; a task with none gets the empty-set output.

    Gradients stay finite where a task has no key.
    """
    torch.manual_seed(0)
    block = AttentionBlock(MultiHeadAttention(8, 2), 8, 16, cross=True).double()
    zq = torch.randn(3, 4, 8, dtype=torch.float64)
    zk = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    out = block(zq, zk, key_mask=KEY_MASK)
    for i, keep in enumerate(KEY_MASK):
        torch.testing.assert_close(out[i], block(zq[i : i + 1], zk[i : i + 1, keep])[0])
    out.sum().backward()
    assert bool(torch.isfinite(zk.grad).all())
    assert all(bool(torch.isfinite(p.grad).all()) for p in block.parameters())


def test_masked_tokens_are_ignored_in_self_attention():
    torch.manual_seed(0)
    block = AttentionBlock(MultiHeadAttention(8, 2), 8, 16, cross=False).double()
    z = torch.randn(3, 5, 8, dtype=torch.float64)
    out = block(z, key_mask=KEY_MASK)
    assert bool(torch.isfinite(out).all())
    for i, keep in enumerate(KEY_MASK):
        torch.testing.assert_close(out[i, keep], block(z[i : i + 1, keep])[0])
