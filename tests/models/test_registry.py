import inspect
import math

import pytest

import aenp
from aenp.evaluate.tables import display_name
from aenp.models.registry import (
    APPROXIMATE_HPARAMS,
    MODEL_SPECS,
    RULES,
    integer,
    number,
    registry_key,
    strict_counterpart,
)
from aenp.nn.fixed_inputs import injection_sites

from .test_contract import SMALL_BY_KEY


def dim_x_of(key):
    return 2 if key.startswith("equivcnp") else 1


def test_keys_of_the_design():
    assert set(aenp.model_keys()) >= {"tnp", "tetnp", "tetnp_approx", "convcnp", "convcnp_approx"}


STRICT_COUNTERPARTS = {
    "tetnp_approx": "tetnp",
    "tepttnp_approx": "tepttnp",
    "convcnp_approx": "convcnp",
    "equivcnp_approx": "equivcnp",
    "relaxed_convcnp": "convcnp",
}


def test_keys_keep_their_order():
    """``aenp models`` and error messages list the keys in this order."""
    assert aenp.model_keys() == [
        "tnp",
        "tetnp",
        "pttnp",
        "tepttnp",
        "convcnp",
        "equivcnp",
        "relaxed_convcnp",
        "tetnp_approx",
        "tepttnp_approx",
        "convcnp_approx",
        "equivcnp_approx",
    ]


@pytest.mark.parametrize("key", aenp.model_keys())
def test_strict_counterparts_and_approximate_keys(key):
    assert strict_counterpart(key) == STRICT_COUNTERPARTS.get(key)
    assert MODEL_SPECS[key].approximate == (key in STRICT_COUNTERPARTS)
    model = aenp.build_model(key, dim_x_of(key), 1, **SMALL_BY_KEY[key.removesuffix("_approx")])
    has_fixed_inputs = any(site.fixed_inputs is not None for site in injection_sites(model))
    assert has_fixed_inputs == (key in STRICT_COUNTERPARTS)
    assert aenp.model_name(model) == key


@pytest.mark.parametrize("key", [k for k in MODEL_SPECS if k.endswith("_approx")])
def test_approx_spec_is_its_strict_spec_made_approximate(key):
    spec, strict = MODEL_SPECS[key], MODEL_SPECS[key.removesuffix("_approx")]
    assert spec.strict_counterpart == strict.key and not strict.approximate
    assert spec.builder is strict.builder and spec.symmetry == strict.symmetry


def test_relaxed_convcnp_relaxes_the_symmetry_of_its_counterpart():
    assert MODEL_SPECS["relaxed_convcnp"].symmetry == MODEL_SPECS["convcnp"].symmetry
    assert MODEL_SPECS["tnp"].symmetry is None and MODEL_SPECS["pttnp"].symmetry is None


def test_display_names_are_the_papers():
    assert display_name("tetnp_approx") == "TE-TNP (T̃)"
    assert display_name("equivcnp_approx") == "EquivCNP (Ẽ)"
    assert display_name("relaxed_convcnp") == "RelaxedConvCNP (T̃)"
    assert display_name("gp-truth") == "gp-truth"


def test_former_views_are_deprecated_but_unchanged():
    from aenp.evaluate import tables
    from aenp.models import registry

    with pytest.warns(DeprecationWarning, match="MODEL_SPECS"):
        assert list(registry.BUILDERS) == aenp.model_keys()[:7]
    with pytest.warns(DeprecationWarning, match="MODEL_SPECS"):
        assert registry.EQUIVARIANT == ("tetnp", "tepttnp", "convcnp", "equivcnp")
    with pytest.warns(DeprecationWarning, match="MODEL_SPECS"):
        assert registry.APPROXIMATE_ONLY == ("relaxed_convcnp",)
    with pytest.warns(DeprecationWarning, match="display_name"):
        assert tables.DISPLAY_NAMES["convcnp"] == "ConvCNP (T)"
    with pytest.raises(AttributeError):
        registry.NO_SUCH_NAME  # noqa: B018


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"key": "tetnp"}, "tetnp"),
        ({"key": "tetnp", "approximate": {}}, "tetnp_approx"),
        ({"key": "relaxed_convcnp", "approximate": {}}, "relaxed_convcnp"),
    ],
)
def test_saved_keys_name_their_registry_key(config, key):
    assert registry_key(config) == key


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
    with pytest.raises(ValueError, match="dim_x must be a positive integer, got 0"):
        aenp.build_model("tnp", 0, 1)
    with pytest.raises(TypeError, match=r"dim_y must be a positive integer, got True \(bool\)"):
        aenp.build_model("tnp", 1, True)


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


def hyperparameters(key):
    """Every hyper-parameter name ``build_model`` accepts for ``key``."""
    spec = MODEL_SPECS[key]
    names = set(inspect.signature(spec.builder).parameters) - {"dim_x", "dim_y"}
    if spec.approximate:
        names |= set(APPROXIMATE_HPARAMS)
    return sorted(names)


@pytest.mark.parametrize("key", aenp.model_keys())
def test_every_hyperparameter_is_checked_before_building(key):
    assert set(hyperparameters(key)) <= RULES.keys()
    for name in hyperparameters(key):
        with pytest.raises(TypeError, match=rf"model '{key}': hyper-parameter {name} must be "):
            aenp.build_model(key, dim_x_of(key), 1, **{name: object()})


def test_rules_state_the_range_they_accept():
    odd = integer(1, odd=True)
    assert odd.expected == "an odd integer >= 1"
    assert odd.in_range(3) and not odd.in_range(4)
    bounded = integer(0, 100)
    assert bounded.expected == "an integer in [0, 100]"
    assert bounded.in_range(100) and not bounded.in_range(101)
    positive = number(0, include_low=False)
    assert positive.expected == "a finite number > 0"
    assert positive.in_range(1e-9) and not positive.in_range(0)
    non_negative = number(0)
    assert non_negative.expected == "a finite number >= 0"
    assert non_negative.in_range(0) and not non_negative.in_range(math.inf)


@pytest.mark.parametrize(
    ("key", "hparams", "error", "match"),
    [
        ("convcnp", {"channels": 0}, ValueError, "channels must be an integer >= 1, got 0"),
        ("convcnp", {"channels": "64"}, TypeError, r"channels must be an integer >= 1, got '64'"),
        ("convcnp", {"num_layers": -1}, ValueError, r"num_layers must be an integer in \[0, 100\]"),
        (
            "tnp",
            {"num_layers": 0},
            ValueError,
            r"num_layers must be an integer in \[1, 100\], got 0",
        ),
        ("tetnp", {"num_layers": 101}, ValueError, r"num_layers must be an integer in \[1, 100\]"),
        ("tetnp", {"embed_dim": 0}, ValueError, "embed_dim must be an integer >= 1, got 0"),
        ("pttnp", {"num_layers": True}, TypeError, r"num_layers must be .*got True \(bool\)"),
        (
            "relaxed_convcnp",
            {"num_layers": 0},
            ValueError,
            r"num_layers must be an integer in \[1,",
        ),
        (
            "convcnp",
            {"points_per_unit": 0},
            ValueError,
            "points_per_unit must be a finite number > 0",
        ),
        ("equivcnp", {"points_per_unit": math.inf}, ValueError, "points_per_unit must be a finite"),
        ("convcnp", {"margin": -0.1}, ValueError, "margin must be a finite number >= 0, got -0.1"),
        (
            "convcnp",
            {"kernel_size": 4},
            ValueError,
            "kernel_size must be an odd integer >= 1, got 4",
        ),
        ("equivcnp", {"kernel_size": 0}, ValueError, "kernel_size must be an odd integer >= 1"),
        ("convcnp", {"cnn": "resnet"}, ValueError, r"cnn must be one of \['conv', 'unet'\]"),
        ("tnp", {"min_std": 0.0}, ValueError, "min_std must be a finite number > 0, got 0.0"),
        ("tnp", {"min_std": math.nan}, ValueError, "min_std must be a finite number > 0, got nan"),
        ("tetnp", {"kernel_hidden": []}, ValueError, "kernel_hidden must be a non-empty list"),
        (
            "tetnp",
            {"kernel_hidden": [16, 0]},
            ValueError,
            r"kernel_hidden must be a non-empty list of integers >= 1, got \[16, 0\]",
        ),
        (
            "tetnp",
            {"kernel_lengthscale": 0.0},
            ValueError,
            "kernel_lengthscale must be a finite number > 0, got 0.0",
        ),
        ("tepttnp", {"num_pseudo_tokens": 0}, ValueError, "num_pseudo_tokens must be an integer"),
        (
            "tepttnp",
            {"offset_scale": -1.0},
            ValueError,
            "offset_scale must be a finite number >= 0",
        ),
        ("relaxed_convcnp", {"num_banks": 0}, ValueError, "num_banks must be an integer >= 1"),
        ("convcnp", {"channel_inputs": -1}, ValueError, "channel_inputs must be an integer >= 0"),
        ("convcnp", {"channel_inputs": 1}, ValueError, r"channel_inputs must be < dim_x=1"),
        ("convcnp", {"max_grid_points": 0}, ValueError, "max_grid_points must be an integer >= 1"),
        ("tnp", {"num_heads": 3}, ValueError, "num_heads must divide embed_dim=128, got 3"),
        ("tetnp", {"embed_dim": 12}, ValueError, "num_heads must divide embed_dim=12, got 8"),
        (
            "tetnp_approx",
            {"p_drop": 1.5},
            ValueError,
            r"p_drop must be a number in \[0, 1\], got 1.5",
        ),
        (
            "tetnp_approx",
            {"num_fixed_inputs": -1},
            ValueError,
            "num_fixed_inputs must be an integer >= 1",
        ),
        (
            "convcnp_approx",
            {"hidden": [8, -8]},
            ValueError,
            "hidden must be a list of integers >= 1",
        ),
        (
            "convcnp_approx",
            {"domain": [[-1, 1], [-1, 1]]},
            ValueError,
            r"domain must have one \(low, high\) pair per input dimension \(dim_x=1\), got 2",
        ),
        ("convcnp_approx", {"domain": [[1, -1]]}, ValueError, r"domain must be None or a list"),
        ("convcnp_approx", {"domain": [[None, 1.0]]}, ValueError, "domain must be None or a list"),
        (
            "convcnp_approx",
            {"domain": [[None, None]]},
            ValueError,
            r"domain must .*\(not every input\)",
        ),
        (
            "convcnp_approx",
            {"domain": [-1, 1]},
            TypeError,
            r"domain must be .*got \[-1, 1\] \(list\)",
        ),
    ],
)
def test_bad_hyperparameters_are_named(key, hparams, error, match):
    with pytest.raises(error, match=rf"model '{key}': hyper-parameter {match}"):
        aenp.build_model(key, dim_x_of(key), 1, **hparams)


@pytest.mark.parametrize(
    ("key", "hparams"),
    [
        ("convcnp", {"num_layers": 0, "margin": 0, "points_per_unit": 8}),
        ("equivcnp", {"num_layers": 0, "channels": 2, "points_per_unit": 2}),
        ("tetnp_approx", {"p_drop": 0, "hidden": [], "kernel_hidden": (4, 4)}),
        ("convcnp_approx", {"p_drop": 1, "domain": [[-1, 1]], "points_per_unit": 8}),
        ("equivcnp_approx", {"domain": [[None, None], [0, 1]], "points_per_unit": 2}),
    ],
)
def test_edges_of_the_valid_ranges_build(key, hparams):
    assert aenp.build_model(key, dim_x_of(key), 1, **hparams).config["hparams"]


@pytest.mark.parametrize(
    ("key", "hparams", "match"),
    [
        ("tnp", {"ff_dim": 10**9}, r"is too large: 2\.57e\+12 parameters, more than the 1e\+09"),
        ("convcnp", {"channels": 10**9}, r"is too large \(.*overflow"),
        ("tepttnp_approx", {"num_fixed_inputs": 10**8}, "is too large"),
    ],
)
def test_absurd_widths_are_refused_before_allocating(key, hparams, match):
    with pytest.raises(ValueError, match=rf"model '{key}' with hyper-parameters .*{match}"):
        aenp.build_model(key, 1, 1, **hparams)


@pytest.mark.parametrize("key", ["convcnp", "relaxed_convcnp"])
def test_inputs_beyond_a_cnns_grid_are_sent_to_the_channels(key):
    with pytest.raises(
        ValueError, match=r"at most 3 dimensions.*data channels with channel_inputs"
    ):
        aenp.build_model(key, 4, 1)
    assert (
        aenp.build_model(key, 4, 1, channel_inputs=1, **SMALL_BY_KEY[key]).backbone.grid_dims == 3
    )
