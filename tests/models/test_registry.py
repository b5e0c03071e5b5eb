import pytest

import aenp


def test_keys_of_the_design():
    assert set(aenp.model_keys()) >= {"tnp", "tetnp", "tetnp_approx", "convcnp", "convcnp_approx"}


def test_approx_key_is_base_followed_by_approximate():
    model = aenp.build_model("convcnp_approx", 1, 1, num_fixed_inputs=5, p_drop=0.25)
    assert model.config["key"] == "convcnp"
    assert model.config["approximate"]["num_fixed_inputs"] == 5
    assert model.backbone.fixed_inputs.p_drop == 0.25


def test_unknown_key_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown model key 'gnp'.*convcnp_approx"):
        aenp.build_model("gnp", 1, 1)


def test_unknown_hyperparameter_is_named():
    with pytest.raises(ValueError, match=r"\['embed_size'\]"):
        aenp.build_model("tnp", 1, 1, embed_size=3)
    with pytest.raises(ValueError, match="num_fixed_inputs"):
        aenp.build_model("tnp", 1, 1, num_fixed_inputs=3)


def test_bad_dimensions_are_refused():
    with pytest.raises(ValueError, match="dim_x must be a positive integer"):
        aenp.build_model("tnp", 0, 1)


def test_non_equivariant_model_cannot_be_made_approximate():
    model = aenp.build_model("tnp", 1, 1)
    with pytest.raises(ValueError, match="0 injection points"):
        aenp.approximate(model)
    with (
        pytest.raises(ValueError, match="not an equivariant model"),
        aenp.strictly_equivariant(model),
    ):
        pass


def test_approximate_twice_is_refused():
    model = aenp.build_model("tetnp_approx", 1, 1)
    with pytest.raises(ValueError, match="already approximately equivariant"):
        aenp.approximate(model)
