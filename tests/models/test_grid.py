"""Gridded inputs (GridBatch) for the convolutional models, and D4 exactness of EquivCNP."""

import pytest
import torch

import aenp
from aenp.batch import GridBatch, target_loglik
from aenp.nn.fixed_inputs import FixedInputs
from aenp.nn.group_conv import D4
from aenp.testing import (
    assert_equivariant,
    dihedral,
    equivariance_error,
    random_grid_batch,
    translation,
)

SMALL = {
    "convcnp": {"channels": 6, "num_layers": 2, "points_per_unit": 4},
    "equivcnp": {"channels": 3, "num_layers": 2, "kernel_size": 3, "points_per_unit": 4},
}
APPROX = {"num_fixed_inputs": 2, "domain": [[-1.0, 1.0], [-1.0, 1.0]]}
GRID_KEYS = ["convcnp", "convcnp_approx", "equivcnp", "equivcnp_approx"]


def build(key, dtype=torch.float64):
    torch.manual_seed(0)
    hparams = {**SMALL[key.removesuffix("_approx")], **(APPROX if "approx" in key else {})}
    model = aenp.build_model(key, 2, 1, **hparams).to(dtype).eval()
    for module in model.modules():
        if isinstance(module, FixedInputs):
            torch.nn.init.normal_(module.projection.weight)
    return model


@pytest.mark.parametrize("key", GRID_KEYS)
def test_predicts_every_cell(key):
    batch = random_grid_batch(dtype=torch.float64)
    pred = build(key)(batch)
    assert pred.mean.shape == batch.y.shape
    assert bool(torch.isfinite(pred.mean).all() and (pred.stddev > 0).all())
    assert bool(torch.isfinite(target_loglik(batch, pred)).all())


@pytest.mark.parametrize("key", GRID_KEYS)
def test_values_outside_the_context_are_never_read(key):
    model, batch = build(key), random_grid_batch(dtype=torch.float64)
    altered = GridBatch(
        torch.where(batch.context_mask[..., None], batch.y, 123.0),
        batch.context_mask,
        batch.target_mask,
        batch.axes,
    )
    torch.testing.assert_close(model(altered).mean, model(batch).mean, rtol=0, atol=0)


@pytest.mark.parametrize("key", GRID_KEYS)
def test_grid_batch_split_consistency(key):
    model, batch = build(key), random_grid_batch(dtype=torch.float64)
    whole = model(batch).mean
    for i in range(len(batch)):
        torch.testing.assert_close(model(batch[i]).mean, whole[i : i + 1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", [(8, 8), (8, 12)])
@pytest.mark.parametrize("g", D4)
def test_equivcnp_is_exactly_d4_equivariant_on_grids(g, shape):
    batch = random_grid_batch(shape=shape, dtype=torch.float64)
    assert_equivariant(build("equivcnp"), batch, *dihedral(g))


def test_equivcnp_approx_breaks_d4_until_zeroed():
    model, batch = build("equivcnp_approx"), random_grid_batch(dtype=torch.float64)
    quarter_turn = dihedral((1, 0))
    assert equivariance_error(model, batch, *quarter_turn) > 1e-3
    with aenp.strictly_equivariant(model):
        for g in D4:
            assert_equivariant(model, batch, *dihedral(g))


def test_convcnp_is_not_rotation_equivariant():
    """Guards the D4 tests: an ordinary CNN visibly changes under a quarter turn."""
    model, batch = build("convcnp"), random_grid_batch(dtype=torch.float64)
    assert equivariance_error(model, batch, *dihedral((1, 0))) > 1e-4


@pytest.mark.parametrize("key", GRID_KEYS)
def test_moving_the_grid_changes_only_approximate_models(key):
    model, batch = build(key), random_grid_batch(dtype=torch.float64)
    error = equivariance_error(model, batch, translation(torch.tensor([0.5, -0.25])))
    assert (error > 1e-3) if key.endswith("_approx") else (error == 0)


def test_grid_size_must_suit_the_unet():
    model = build("convcnp")  # 2 levels: axes must be multiples of 4
    with pytest.raises(ValueError, match=r"multiple of 4 cells along every axis"):
        model(random_grid_batch(shape=(8, 6), dtype=torch.float64))


def equal_count_grid_batch(dtype=torch.float64):
    """Gridded tasks with 5 context and 7 target cells each (as point sets need)."""
    generator = torch.Generator().manual_seed(0)
    y = torch.randn(3, 4, 4, 1, generator=generator, dtype=dtype)
    order = torch.stack([torch.randperm(16, generator=generator) for _ in range(3)])
    context = torch.zeros(3, 16, dtype=torch.bool).scatter(1, order[:, :5], True)
    target = torch.zeros(3, 16, dtype=torch.bool).scatter(1, order[:, 5:12], True)
    axes = (torch.arange(4, dtype=dtype), torch.arange(4, dtype=dtype))
    return GridBatch(y, context.view(3, 4, 4), target.view(3, 4, 4), axes)


def test_point_set_models_predict_the_target_cells_of_a_grid():
    torch.manual_seed(0)
    model = aenp.build_model("tetnp", 2, 1, embed_dim=8, num_heads=2, num_layers=1, ff_dim=8)
    model = model.double().eval()
    grid = equal_count_grid_batch()
    points = grid.to_points()
    assert points.xc.shape == (3, 5, 2) and points.xt.shape == (3, 7, 2)
    on_grid, direct = model(grid), model(points)
    torch.testing.assert_close(on_grid.mean[grid.target_mask], direct.mean.reshape(-1, 1))
    torch.testing.assert_close(target_loglik(grid, on_grid), target_loglik(points, direct))


def test_point_sets_need_equal_counts_per_task():
    grid = equal_count_grid_batch()
    uneven = GridBatch(grid.y, grid.context_mask, grid.target_mask.clone(), grid.axes)
    uneven.target_mask[0].view(-1)[grid.context_mask[0].view(-1).nonzero()[0]] = True
    with pytest.raises(ValueError, match="same number of cells per task"):
        uneven.to_points()


def test_equivcnp_needs_two_dimensional_inputs():
    with pytest.raises(ValueError, match="equivcnp acts on 2-D inputs"):
        aenp.build_model("equivcnp", 1, 1)


def with_elevation(batch, seed=1):
    """``batch`` with a random extra input (an elevation) at every cell."""
    generator = torch.Generator().manual_seed(seed)
    shape = batch.y.shape[1:-1]
    extra = torch.randn(*shape, 1, generator=generator, dtype=batch.dtype)
    return GridBatch(batch.y, batch.context_mask, batch.target_mask, batch.axes, extra)


def test_extra_inputs_follow_the_grid_coordinates_in_the_inputs():
    batch = with_elevation(random_grid_batch(dtype=torch.float64))
    assert batch.dim_x == 3
    first = batch[:1]
    points = first.to_points()
    cells = first.context_mask[0].nonzero()
    torch.testing.assert_close(points.xc[0, :, 0], first.axes[0][cells[:, 0]])
    torch.testing.assert_close(points.xc[0, :, 2], first.extra_inputs[cells[:, 0], cells[:, 1], 0])
    moved = batch.shift(torch.tensor([0.5, -0.25, 2.0], dtype=torch.float64))
    torch.testing.assert_close(moved.axes[1], batch.axes[1] - 0.25)
    torch.testing.assert_close(moved.extra_inputs, batch.extra_inputs + 2.0)
    with pytest.raises(
        ValueError, match=r"extra_inputs has shape \(8, 7, 1\), expected \(8, 8, de\)"
    ):
        GridBatch(
            batch.y, batch.context_mask, batch.target_mask, batch.axes, batch.extra_inputs[:, :7]
        )
    nan = batch.extra_inputs.clone()
    nan[0, 0] = torch.nan
    with pytest.raises(ValueError, match="extra_inputs must be finite at every cell"):
        GridBatch(batch.y, batch.context_mask, batch.target_mask, batch.axes, nan)


def channel_model(key="convcnp"):
    torch.manual_seed(0)
    approx = {"num_fixed_inputs": 2, "domain": [[-1.0, 1.0], [-1.0, 1.0], [None, None]]}
    hparams = {**SMALL["convcnp"], "channel_inputs": 1, **(approx if "approx" in key else {})}
    return aenp.build_model(key, 3, 1, **hparams).double().eval()


def test_channel_inputs_are_data_not_grid_dimensions():
    model, batch = channel_model(), with_elevation(random_grid_batch(dtype=torch.float64))
    pred = model(batch)
    assert pred.mean.shape == batch.y.shape
    # Equivariant to moving the grid, not to raising the elevation.
    shift_grid = torch.tensor([0.5, -0.75, 0.0], dtype=torch.float64)
    assert_equivariant(model, batch, translation(shift_grid))
    raise_elevation = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    assert equivariance_error(model, batch, translation(raise_elevation)) > 1e-3
    # The same holds off the grid, for shifts along the lattice (points_per_unit = 4).
    points = batch[:1].to_points()
    assert_equivariant(model, points, translation(torch.tensor([0.25, -0.5, 0.0])))
    assert equivariance_error(model, points, translation(raise_elevation)) > 1e-3


def test_channel_inputs_are_checked_against_the_data():
    model = channel_model()
    with pytest.raises(
        ValueError,
        match=r"grids 2 input.* takes 1 as channels, but the data have 2 grid axes and 0",
    ):
        model.backbone.forward_grid(
            torch.zeros(1, 8, 8, 1, dtype=torch.float64),
            torch.ones(1, 8, 8, dtype=torch.bool),
            aenp.grid.Grid(random_grid_batch().axes),
        )
    with pytest.raises(ValueError, match="channel_inputs must be < dim_x=2"):
        aenp.build_model("convcnp", 2, 1, channel_inputs=2)
    with pytest.raises(ValueError, match="give \\(None, None\\) for the rest of domain"):
        aenp.build_model("convcnp_approx", 3, 1, channel_inputs=1, domain=[[-1, 1]] * 3)


@pytest.mark.parametrize("key", ["convcnp_approx", "relaxed_convcnp"])
def test_approximate_channel_input_models_save_and_reload(key, tmp_path):
    model = channel_model(key)
    for module in model.modules():
        if isinstance(module, FixedInputs):
            torch.nn.init.normal_(module.projection.weight)
    batch = with_elevation(random_grid_batch(dtype=torch.float64))
    aenp.save(model, tmp_path / "model")
    again = aenp.load(tmp_path / "model").double().eval()
    torch.testing.assert_close(again(batch).mean, model(batch).mean, rtol=0, atol=1e-12)
    # Its fixed inputs vary over the grid only: moving the grid moves the prediction.
    assert equivariance_error(model, batch, translation(torch.tensor([0.5, 0.5, 0.0]))) > 1e-6
