import aenp

from .test_contract import SMALL_TNP


def shapes(module):
    return [tuple(p.shape) for p in module.parameters()]


def test_tetnp_differs_from_the_tnp_only_in_where_inputs_enter():
    dim_x, dim_y, embed_dim = 2, 3, SMALL_TNP["embed_dim"]
    tnp = aenp.build_model("tnp", dim_x, dim_y, **SMALL_TNP).backbone
    tetnp = aenp.build_model("tetnp", dim_x, dim_y, **SMALL_TNP).backbone
    # Tokens embed (x, y, flag) in the TNP and (y, flag) in the TE-TNP, through the same MLP.
    assert shapes(tnp.token_encoder)[0] == (embed_dim, dim_x + dim_y + 1)
    assert shapes(tetnp.token_encoder)[0] == (embed_dim, dim_y + 1)
    assert shapes(tetnp.token_encoder)[1:] == shapes(tnp.token_encoder)[1:]
    assert shapes(tetnp.head) == shapes(tnp.head)
