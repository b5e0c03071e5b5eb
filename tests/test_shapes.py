"""The test-suite checks the shapes that aenp's annotations document (see tests/conftest.py)."""

import pytest
import torch
from jaxtyping import TypeCheckError

from aenp.nn.attention import MultiHeadAttention


def test_keys_of_another_batch_size_are_refused_though_attention_would_broadcast_them():
    attention = MultiHeadAttention(embed_dim=8, num_heads=2)
    # Unchecked, the one task's keys would silently serve both tasks' queries.
    with pytest.raises(TypeCheckError, match="parameter 'zk'"):
        attention(torch.randn(2, 3, 8), torch.randn(1, 4, 8))
