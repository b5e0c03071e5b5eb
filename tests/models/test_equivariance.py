"""Exactness of every equivariance claim, in float64 (docs/architecture.md, symmetries)."""

import pytest
import torch

import aenp
from aenp.nn.fixed_inputs import FixedInputs
from aenp.nn.setconv import widen_windows
from aenp.testing import (
    assert_equivariant,
    equivariance_error,
    random_batch,
    randomise_fixed_inputs,
    translation,
)

from .test_contract import SMALL_CONVCNP, SMALL_TNP

PPU = SMALL_CONVCNP["points_per_unit"]
ANY_SHIFTS = [0.37, -5.123, 8.0, 1e3 + 0.25]
LATTICE_SHIFTS = [1 / PPU, -7 / PPU, 8.0, 1000.0 + 3 / PPU]
SMALL_PT = {**SMALL_TNP, "num_pseudo_tokens": 4}
STRICT = {
    "tetnp": (SMALL_TNP, ANY_SHIFTS),
    "tepttnp": (SMALL_PT, ANY_SHIFTS),
    "convcnp": (SMALL_CONVCNP, LATTICE_SHIFTS),
}


def build(key, **hparams):
    torch.manual_seed(0)
    base = key.removesuffix("_approx")
    return aenp.build_model(key, 1, 1, **STRICT[base][0], **hparams).double().eval()


@pytest.mark.parametrize("key", list(STRICT))
def test_strict_models_are_equivariant(key):
    model, batch = build(key), random_batch(dtype=torch.float64)
    for shift in STRICT[key][1]:
        assert_equivariant(model, batch, translation(shift))


@pytest.mark.parametrize("kernel_lengthscale", [1.0, 0.03])
def test_tetnp_is_equivariant_to_vector_shifts_in_2d(kernel_lengthscale):
    torch.manual_seed(0)
    model = aenp.build_model("tetnp", 2, 1, **SMALL_TNP, kernel_lengthscale=kernel_lengthscale)
    model = model.double().eval()
    batch = random_batch(dim_x=2, dtype=torch.float64)
    assert_equivariant(model, batch, translation(torch.tensor([3.7, -0.2], dtype=torch.float64)))


def test_convcnp_is_not_equivariant_off_the_lattice():
    """Guards the test above: off-lattice shifts must visibly change a ConvCNP."""
    model, batch = build("convcnp"), random_batch(dtype=torch.float64)
    assert equivariance_error(model, batch, translation(0.3 / PPU)) > 1e-6


@pytest.mark.parametrize(("key", "hparams"), [("tnp", SMALL_TNP), ("pttnp", SMALL_PT)])
def test_non_equivariant_transformers_are_not_equivariant(key, hparams):
    torch.manual_seed(0)
    model = aenp.build_model(key, 1, 1, **hparams).double().eval()
    assert equivariance_error(model, random_batch(dtype=torch.float64), translation(0.37)) > 1e-4


def test_tepttnp_is_equivariant_to_vector_shifts_in_2d():
    torch.manual_seed(0)
    model = aenp.build_model("tepttnp", 2, 1, **SMALL_PT).double().eval()
    batch = random_batch(dim_x=2, dtype=torch.float64)
    assert_equivariant(model, batch, translation(torch.tensor([3.7, -0.2], dtype=torch.float64)))


@pytest.mark.parametrize("key", ["tetnp_approx", "tepttnp_approx", "convcnp_approx"])
class TestApproximate:
    def test_zero_initialised_equals_strict_model(self, key):
        strict, approx = build(key.removesuffix("_approx")), build(key, domain=[[-3.0, 3.0]])
        approx.load_state_dict(strict.state_dict(), strict=False)
        batch = random_batch(dtype=torch.float64)
        torch.testing.assert_close(approx(batch).mean, strict(batch).mean, rtol=0, atol=0)
        torch.testing.assert_close(approx(batch).stddev, strict(batch).stddev, rtol=0, atol=0)

    def test_not_equivariant_once_fixed_inputs_are_nonzero(self, key):
        model = build(key, domain=[[-3.0, 3.0]])
        randomise_fixed_inputs(model)
        assert equivariance_error(model, random_batch(dtype=torch.float64), translation(1.0)) > 1e-3

    def test_strictly_equivariant_restores_exactness_and_state(self, key):
        model, batch = build(key, domain=[[-3.0, 3.0]]), random_batch(dtype=torch.float64)
        randomise_fixed_inputs(model)
        with aenp.strictly_equivariant(model):
            for shift in STRICT[key.removesuffix("_approx")][1]:
                assert_equivariant(model, batch, translation(shift))
        assert equivariance_error(model, batch, translation(1.0)) > 1e-3

    def test_state_restored_after_an_exception(self, key):
        model = build(key)
        with pytest.raises(RuntimeError), aenp.strictly_equivariant(model):
            raise RuntimeError
        assert all(m.enabled for m in model.modules() if isinstance(m, FixedInputs))

    def test_p_drop_one_is_equivariant_in_training(self, key):
        model = build(key, p_drop=1.0, domain=[[-3.0, 3.0]]).train()
        randomise_fixed_inputs(model)
        assert_equivariant(model, random_batch(dtype=torch.float64), translation(1.0))

    def test_strict_outside_the_domain(self, key):
        """Far from the training domain the fixed inputs vanish: predictions equal strict ones."""
        model = build(key, domain=[[-3.0, 3.0]])
        randomise_fixed_inputs(model)
        batch = random_batch(dtype=torch.float64).shift(8.0)
        with aenp.strictly_equivariant(model):
            strict = model(batch)
        torch.testing.assert_close(model(batch).mean, strict.mean, rtol=0, atol=0)


@pytest.mark.parametrize("key", list(STRICT))
def test_strict_models_are_equivariant_compiled(key, quick_compile):
    # As compiled training has them (aenp.train.module.compiled_loss): windows widened, shapes
    # static, the grid's anchor an input of the graphs rather than a constant baked into them.
    model, batch = build(key), random_batch(dtype=torch.float64)
    widen_windows(model)
    model = torch.compile(model, dynamic=False)
    for shift in STRICT[key][1]:
        assert_equivariant(model, batch, translation(shift))
