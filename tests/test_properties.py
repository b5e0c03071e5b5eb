"""Properties of the public API over random shapes, dtypes, extents and hyper-parameters.

Every call either gives a valid result or raises one of aenp's own errors whose message names
the argument at fault; every equivariance claim holds for random group elements. Examples are
derandomised (see ``conftest.py``) so the suite is repeatable; ``--hypothesis-profile=explore``
searches far more of the space.
"""

import inspect

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch.distributions import Normal

import aenp
from aenp import Batch, GridBatch
from aenp.errors import AenpError
from aenp.models.registry import MODEL_SPECS
from aenp.nn.fixed_inputs import FixedInputs
from aenp.nn.group_conv import D4
from aenp.testing import assert_equivariant, dihedral, dihedral_points, random_batch, translation

from .models.test_contract import SMALL_BY_KEY

SMALL_GRIDS = {"max_grid_points": 2**14}  # far-flung data then meet the bound, cheaply
DTYPES = st.sampled_from([torch.float32, torch.float64])
FIELDS = ("xc", "yc", "xt", "yt")


def small_model(key: str, dim_x: int, dim_y: int, dtype=torch.float64, **hparams):
    torch.manual_seed(0)
    base = key.removesuffix("_approx")
    grids = SMALL_GRIDS if "max_grid_points" in MODEL_SPECS[key].default_hparams() else {}
    hparams = {**SMALL_BY_KEY[base], **grids, **hparams}
    return aenp.build_model(key, dim_x, dim_y, **hparams).to(dtype).eval()


def supported_dims(key: str) -> list[int]:
    base = key.removesuffix("_approx")
    return [2] if base == "equivcnp" else [1, 2]


@st.composite
def tensor_sets(draw):
    """Shapes, dtypes and contents for a Batch, valid or not."""
    batch = draw(st.integers(1, 3))
    nc, nt = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    dx, dy = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    shapes = {"xc": [batch, nc, dx], "yc": [batch, nc, dy], "xt": [batch, nt, dx]}
    shapes["yt"] = [batch, nt, dy]
    # Perturb one field's shape (batch size, size or dimension) or rank, or none.
    broken = draw(st.sampled_from([None, *FIELDS]))
    if broken is not None:
        axis = draw(st.integers(0, 3))
        if axis == 3:
            shapes[broken] = shapes[broken][:2]
        else:
            shapes[broken][axis] += draw(st.integers(1, 2))
    dtype = draw(DTYPES)
    tensors = {k: torch.randn(*s, dtype=dtype) for k, s in shapes.items()}
    odd = draw(st.sampled_from([None, "nan", "inf", "int", "float16"]))
    target = draw(st.sampled_from(FIELDS))
    if odd in ("nan", "inf") and tensors[target].numel():
        tensors[target].view(-1)[0] = float(odd)
    elif odd == "int":
        tensors[target] = tensors[target].long()
    elif odd == "float16":
        tensors[target] = tensors[target].half()
    return tensors


def expected_valid(t: dict[str, torch.Tensor]) -> bool:
    """An independent statement of what makes a batch valid."""
    if any(v.ndim != 3 for v in t.values()):
        return False
    if len({v.dtype for v in t.values()}) != 1 or not t["xc"].is_floating_point():
        return False
    if any(not bool(torch.isfinite(v).all()) for v in t.values()):
        return False
    (b, nc, dx), (b_yc, nc_y, dy) = t["xc"].shape, t["yc"].shape
    b_xt, nt, dx_t = t["xt"].shape
    b_yt, nt_y, dy_t = t["yt"].shape
    return (
        (b == b_yc == b_xt == b_yt)
        and nc == nc_y
        and dx == dx_t
        and nt == nt_y >= 1
        and (dy == dy_t)
    )


@given(tensor_sets())
def test_batch_is_built_exactly_when_valid_and_errors_name_the_field(tensors):
    try:
        batch = Batch(**tensors)
    except AenpError as error:
        assert not expected_valid(tensors), f"valid tensors refused: {error}"
        assert any(name in str(error) for name in FIELDS), str(error)
    else:
        assert expected_valid(tensors)
        assert (len(batch), batch.dim_x, batch.dim_y) == (
            tensors["xc"].shape[0],
            tensors["xc"].shape[2],
            tensors["yc"].shape[2],
        )


@given(
    shape=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    dtype=DTYPES,
    nan_in=st.sampled_from([None, "context", "target", "outside"]),
    spacing=st.floats(1e-3, 1e3),
    data=st.data(),
)
def test_grid_batch_reads_nan_only_outside_its_masks(shape, dtype, nan_in, spacing, data):
    batch_size = 2
    role = torch.tensor(
        data.draw(
            st.lists(
                st.integers(0, 2),
                min_size=2 * shape[0] * shape[1],
                max_size=2 * shape[0] * shape[1],
            )
        )
    )
    role = role.reshape(batch_size, *shape)
    context, target = role == 0, role == 1
    assume(bool(target.flatten(1).any(1).all()))
    y = torch.randn(batch_size, *shape, 1, dtype=dtype)
    cells = {"context": context, "target": target, "outside": role == 2}.get(nan_in)
    poisoned = cells is not None and bool(cells.any())
    if poisoned:
        y[cells] = float("nan")
    axes = tuple(spacing * torch.arange(n, dtype=dtype) for n in shape)
    if poisoned and nan_in != "outside":
        with pytest.raises(AenpError, match="NaN"):
            GridBatch(y, context, target, axes)
    else:
        assert len(GridBatch(y, context, target, axes)) == batch_size


BAD_VALUES = [0, -1, -0.5, 1.5, "abc", None, float("nan"), 10**9]


@given(
    key=st.sampled_from(aenp.model_keys()),
    value=st.sampled_from(BAD_VALUES),
    data=st.data(),
)
def test_every_hyper_parameter_is_validated_at_build_time(key, value, data):
    base = key.removesuffix("_approx")
    names = sorted(set(inspect.signature(MODEL_SPECS[key].builder).parameters) - {"dim_x", "dim_y"})
    name = data.draw(st.sampled_from(names))
    dim_x = supported_dims(key)[0]
    hparams = {**SMALL_BY_KEY[base], name: value}
    try:
        model = aenp.build_model(key, dim_x, 1, **hparams)
    except AenpError as error:
        assert name in str(error), f"{name}={value!r}: {error}"
        return
    # Accepted: the model must then work on a small batch, or refuse a grid it cannot afford.
    try:
        pred = model.double().eval()(random_batch(dim_x=dim_x, dtype=torch.float64))
    except AenpError as error:
        assert "max_grid_points" in str(error), str(error)
        return
    assert bool(torch.isfinite(pred.mean).all() and (pred.stddev > 0).all())


@given(
    key=st.sampled_from(aenp.model_keys()),
    dtype=DTYPES,
    dim_y=st.integers(1, 2),
    num_context=st.integers(0, 9),
    num_target=st.integers(2, 9),  # random_batch pins two targets at the corners
    log_extent=st.floats(-2, 4),
    data=st.data(),
)
def test_forward_gives_a_normal_or_a_named_error(
    key, dtype, dim_y, num_context, num_target, log_extent, data
):
    dim_x = data.draw(st.sampled_from(supported_dims(key)))
    model = small_model(key, dim_x, dim_y, dtype=dtype)
    batch = random_batch(2, num_context, num_target, dim_x, dim_y, dtype=dtype)
    extent = 10.0**log_extent
    batch = Batch(batch.xc * extent, batch.yc, batch.xt * extent)
    try:
        pred = model(batch)
    except AenpError as error:
        assert "max_grid_points" in str(error), str(error)  # only the grid bound refuses valid data
        return
    assert isinstance(pred, Normal)
    assert pred.mean.shape == (2, num_target, dim_y)
    assert pred.mean.dtype == dtype
    assert bool(torch.isfinite(pred.mean).all() and (pred.stddev > 0).all())


def randomise_fixed_inputs(model):
    for module in model.modules():
        if isinstance(module, FixedInputs):
            torch.nn.init.normal_(module.projection.weight)


SHIFTABLE = ["tetnp", "tepttnp", "tetnp_approx", "tepttnp_approx"]
LATTICE = ["convcnp", "convcnp_approx", "relaxed_convcnp"]


@given(
    key=st.sampled_from(SHIFTABLE),
    shift=st.floats(-1e3, 1e3),
    seed=st.integers(0, 2**16),
)
def test_translation_equivariance_for_any_shift(key, shift, seed):
    model = small_model(key, 1, 1)
    randomise_fixed_inputs(model)
    with aenp.strictly_equivariant(model):
        assert_equivariant(model, random_batch(dtype=torch.float64, seed=seed), translation(shift))


@given(
    key=st.sampled_from(LATTICE),
    cells=st.integers(-(10**6), 10**6),
    seed=st.integers(0, 2**16),
)
def test_lattice_translation_equivariance(key, cells, seed):
    model = small_model(key, 1, 1)
    randomise_fixed_inputs(model)
    shift = cells / SMALL_BY_KEY[key.removesuffix("_approx")]["points_per_unit"]
    with aenp.strictly_equivariant(model):
        assert_equivariant(model, random_batch(dtype=torch.float64, seed=seed), translation(shift))


@given(
    key=st.sampled_from(["equivcnp", "equivcnp_approx"]),
    g=st.sampled_from(D4),
    seed=st.integers(0, 2**16),
)
def test_dihedral_equivariance_on_point_sets(key, g, seed):
    model = small_model(key, 2, 1)
    randomise_fixed_inputs(model)
    batch = random_batch(dim_x=2, dtype=torch.float64, seed=seed)
    with aenp.strictly_equivariant(model):
        assert_equivariant(model, batch, dihedral_points(g))


@given(
    key=st.sampled_from(["equivcnp", "equivcnp_approx"]),
    g=st.sampled_from(D4),
    seed=st.integers(0, 2**16),
)
def test_dihedral_equivariance_on_grids(key, g, seed):
    from aenp.testing import random_grid_batch

    model = small_model(key, 2, 1)
    randomise_fixed_inputs(model)
    batch = random_grid_batch(shape=(8, 8), dtype=torch.float64, seed=seed)
    with aenp.strictly_equivariant(model):
        assert_equivariant(model, batch, *dihedral(g))
