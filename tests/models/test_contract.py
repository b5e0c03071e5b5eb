"""Every registry model passes the shipped contract (small sizes keep the suite fast)."""

import pytest
import torch

import aenp
from aenp.testing import ModelContract, random_batch, random_grid_batch

SMALL_TNP = {"embed_dim": 16, "num_heads": 2, "num_layers": 2, "ff_dim": 16}
SMALL_CONVCNP = {"points_per_unit": 16, "channels": 8, "num_layers": 3}
SMALL_APPROX = {"num_fixed_inputs": 2, "domain": [[-2.5, 2.5]]}
SMALL_PT = {**SMALL_TNP, "num_pseudo_tokens": 4}
SMALL_EQUIVCNP = {"points_per_unit": 2, "channels": 2, "num_layers": 2, "kernel_size": 3}
SMALL_RELAXED = {"points_per_unit": 16, "channels": 8, "num_layers": 2, "num_banks": 2}
SMALL_BY_KEY = {
    "tnp": SMALL_TNP,
    "tetnp": SMALL_TNP,
    "pttnp": SMALL_PT,
    "tepttnp": SMALL_PT,
    "convcnp": SMALL_CONVCNP,
    "equivcnp": SMALL_EQUIVCNP,
    "relaxed_convcnp": SMALL_RELAXED,
}
"""Small hyper-parameters of every builder, by the key of its strict model."""


class TestTNP(ModelContract):
    key = "tnp"
    hparams = SMALL_TNP


class TestTETNP(ModelContract):
    key = "tetnp"
    hparams = SMALL_TNP
    stationary_prior = True


class TestTETNPApprox(ModelContract):
    key = "tetnp_approx"
    hparams = {**SMALL_TNP, **SMALL_APPROX}
    stationary_prior = True


class TestConvCNP(ModelContract):
    key = "convcnp"
    hparams = SMALL_CONVCNP


class TestConvCNPConvNet(ModelContract):
    key = "convcnp"
    hparams = {**SMALL_CONVCNP, "cnn": "conv", "kernel_size": 5}


class TestConvCNPApprox(ModelContract):
    key = "convcnp_approx"
    hparams = {**SMALL_CONVCNP, **SMALL_APPROX}


class TestEquivCNP(ModelContract):
    key = "equivcnp"
    dim_x = 2
    hparams = SMALL_EQUIVCNP


class TestEquivCNPApprox(ModelContract):
    key = "equivcnp_approx"
    dim_x = 2
    hparams = {**SMALL_EQUIVCNP, "num_fixed_inputs": 2, "domain": [[-2.5, 2.5], [-2.5, 2.5]]}


class TestRelaxedConvCNP(ModelContract):
    key = "relaxed_convcnp"
    hparams = SMALL_RELAXED


class TestPTTNP(ModelContract):
    key = "pttnp"
    hparams = SMALL_PT


class TestTEPTTNP(ModelContract):
    key = "tepttnp"
    hparams = SMALL_PT
    stationary_prior = True


class TestTEPTTNPApprox(ModelContract):
    key = "tepttnp_approx"
    hparams = {**SMALL_PT, **SMALL_APPROX}
    stationary_prior = True


def test_gridded_data_of_another_dtype_are_cast_to_the_model():
    torch.manual_seed(0)
    model = aenp.build_model("convcnp", 2, 1, **SMALL_CONVCNP).eval()
    batch = random_grid_batch(dtype=torch.float64)
    pred = model(batch)
    assert pred.mean.dtype == torch.float32
    expected = model(batch.to(torch.float32))
    torch.testing.assert_close(pred.mean, expected.mean, rtol=1e-5, atol=1e-5)


def test_a_context_mask_beside_a_batch_is_refused():
    """A batch carries its own mask; a second one given beside it would be ambiguous."""
    torch.manual_seed(0)
    model = aenp.build_model("tnp", 1, 1, **SMALL_TNP)
    batch = random_batch().pad_context(9)
    with pytest.raises(ValueError, match=r"context_mask is given beside a batch"):
        model(batch, context_mask=batch.context_mask)
    with pytest.raises(ValueError, match=r"context_mask must have shape \[batch, nc\]"):
        model(batch.xc, batch.yc, batch.xt, context_mask=batch.context_mask[:, :7])


def test_a_batch_has_its_own_path():
    torch.manual_seed(0)
    model = aenp.build_model("tnp", 1, 1, **SMALL_TNP).eval()
    batch = random_batch()
    torch.testing.assert_close(model.forward_batch(batch).mean, model(batch).mean, rtol=0, atol=0)
    with pytest.raises(TypeError, match=r"batch must be an aenp\.Batch .*got Tensor"):
        model.forward_batch(batch.xc)


def test_every_registry_key_has_a_contract_test():
    tested = {cls.key for cls in ModelContract.__subclasses__() if cls.__module__ == __name__}
    assert tested == set(aenp.model_keys())
