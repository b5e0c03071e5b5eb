import math

import numpy as np
import pytest
import torch

import aenp
from aenp.batch import EvaluationBatch
from aenp.data.experiments import get_experiment
from aenp.evaluate.metrics import (
    departure_from_equivariance,
    evaluate_per_task,
    mean_and_stderr,
    per_task_metrics,
    summarise,
)
from aenp.evaluate.tables import results_table
from aenp.nn.fixed_inputs import FixedInputs
from aenp.testing import random_batch, random_grid_batch

SMALL = {"channels": 8, "num_layers": 2, "points_per_unit": 16}


def test_mean_and_stderr_match_numpy_and_skip_nans():
    values = torch.tensor([1.0, 2.0, float("nan"), 4.0, 7.0])
    summary = mean_and_stderr(values)
    kept = np.array([1.0, 2.0, 4.0, 7.0])
    assert math.isclose(summary["mean"], kept.mean())
    assert math.isclose(summary["stderr"], kept.std(ddof=1) / 2)
    assert summary["num_tasks"] == 4


def split(num_tasks=32, name="test"):
    return get_experiment("gp1d").split(name, num_tasks, 16)


def test_per_task_metrics_against_a_direct_computation():
    model = aenp.build_model("convcnp", 1, 1, **SMALL).eval()
    items = split()
    metrics = per_task_metrics(model, items)
    batch = items[1].batch
    with torch.no_grad():
        pred = model(batch)
        direct = pred.log_prob(batch.yt)[..., 0].mean(-1)
        context = model(batch.xc, batch.yc, batch.xc).log_prob(batch.yc)[..., 0].mean(-1)
    torch.testing.assert_close(metrics["loglik"][16:], direct.double())
    torch.testing.assert_close(metrics["context_loglik"][16:], context.double())
    torch.testing.assert_close(metrics["gap"], metrics["gt_loglik"] - metrics["loglik"])
    assert "delta_equiv" not in metrics


def test_delta_equiv_measures_departure_from_the_strict_model():
    model = aenp.build_model("convcnp_approx", 1, 1, domain=[[-4.0, 4.0]], **SMALL).eval()
    items = split(16)
    assert per_task_metrics(model, items)["delta_equiv"].abs().max() == 0
    torch.nn.init.normal_(model.backbone.fixed_inputs.projection.weight)
    metrics = per_task_metrics(model, items)
    strict = per_task_metrics(model, items, strict=True)
    assert bool((metrics["delta_equiv"] > 0).all())
    assert not torch.equal(metrics["loglik"], strict["loglik"])
    assert all(m.enabled for m in model.modules() if isinstance(m, FixedInputs))


def test_empty_context_tasks_have_no_context_loglik():
    model = aenp.build_model("convcnp", 1, 1, **SMALL).eval()
    batch = split(16)[0].batch
    empty = EvaluationBatch(aenp.Batch(batch.xc[:, :0], batch.yc[:, :0], batch.xt, batch.yt))
    metrics = per_task_metrics(model, [empty])
    assert bool(metrics["context_loglik"].isnan().all())
    assert bool(torch.isfinite(metrics["loglik"]).all())


def test_strict_rows_only_for_approximate_models_and_table_lists_them():
    splits = {"test": split(16), "ood": split(16, "ood")}
    strict = summarise(evaluate_per_task(aenp.build_model("convcnp", 1, 1, **SMALL), splits))
    approx = summarise(evaluate_per_task(aenp.build_model("convcnp_approx", 1, 1, **SMALL), splits))
    assert set(strict) == {"test", "ood"}
    assert set(approx) == {"test", "ood", "test_strict", "ood_strict"}
    table = results_table(
        [{"model": "convcnp", "splits": strict}, {"model": "convcnp_approx", "splits": approx}],
        "test",
        "ood",
    )
    rows = table.splitlines()
    assert rows[2].startswith("| Ground truth (mixture)")
    assert any(r.startswith("| ConvCNP (T̃), fixed inputs zeroed") for r in rows)
    assert len(rows) == 2 + 2 + 3


def test_comparisons_pair_approximate_models_with_strict_and_non_equivariant_ones():
    import numpy as np

    from aenp.evaluate.tables import comparisons_table

    rng = np.random.default_rng(0)
    per_task = {
        k: {"test": rng.normal(size=50)}
        for k in ("pttnp", "convcnp", "convcnp_approx", "relaxed_convcnp")
    }
    per_task["relaxed_convcnp"]["test"] = per_task["convcnp"]["test"] + 1.0
    rows = comparisons_table(per_task, "test", None).splitlines()[2:]
    pairs = [tuple(cell.strip() for cell in row.split("|")[1:3]) for row in rows]
    assert pairs == [
        ("ConvCNP (T̃)", "ConvCNP (T)"),
        ("ConvCNP (T̃)", "PT-TNP"),
        ("RelaxedConvCNP (T̃)", "ConvCNP (T)"),
        ("RelaxedConvCNP (T̃)", "PT-TNP"),
    ]
    assert rows[2].endswith("| 1.000 ± 0.000 | better |")


def test_small_estimates_keep_their_significant_digits():
    from aenp.evaluate.tables import estimate

    assert estimate({"mean": 3.14e-4, "stderr": 2e-5}) == "3.14e-04 ± 2.00e-05"
    assert estimate({"mean": 0.5, "stderr": 0.01}) == "0.500 ± 0.010"


def gaussian_loglik(y, mean, std):
    """log N(y; mean, std²), written out (not through torch.distributions)."""
    return -0.5 * np.log(2 * np.pi * std**2) - (y - mean) ** 2 / (2 * std**2)


def approx_2d():
    torch.manual_seed(0)
    model = aenp.build_model(
        "convcnp_approx", 2, 1, domain=[[-1.0, 1.0]] * 2, channels=4, num_layers=2
    )
    torch.nn.init.normal_(model.backbone.fixed_inputs.projection.weight)
    return model.double().eval()


@torch.no_grad()
def test_loglik_is_averaged_over_each_tasks_targets_then_over_tasks():
    torch.manual_seed(0)
    model = aenp.build_model("convcnp", 1, 1, **SMALL).double().eval()
    # Two batches with 3 and 40 targets per task: pooling all targets would weigh them unevenly.
    batches = [random_batch(2, num_target=n, dtype=torch.float64, seed=n) for n in (3, 40)]
    per_task, pooled, rmse = [], [], []
    for batch in batches:
        pred = model(batch)
        mean, std, y = (t[..., 0].numpy() for t in (pred.mean, pred.stddev, batch.yt))
        logliks = gaussian_loglik(y, mean, std)
        per_task += list(logliks.mean(1))
        pooled += list(logliks.ravel())
        rmse += list(np.sqrt(((mean - y) ** 2).mean(1)))
    metrics = per_task_metrics(model, [EvaluationBatch(b) for b in batches])
    np.testing.assert_allclose(metrics["loglik"], per_task, rtol=1e-12)
    np.testing.assert_allclose(metrics["rmse"], rmse, rtol=1e-12)
    summary = summarise(evaluate_per_task(model, {"test": [EvaluationBatch(b) for b in batches]}))
    summary = summary["test"]
    assert summary["loglik"]["mean"] == pytest.approx(np.mean(per_task), rel=1e-12)
    assert summary["loglik"]["stderr"] == pytest.approx(np.std(per_task, ddof=1) / 2, rel=1e-12)
    assert summary["loglik"]["num_tasks"] == 4
    assert abs(np.mean(per_task) - np.mean(pooled)) > 1e-3  # the order of averaging matters


@torch.no_grad()
def test_gridded_loglik_and_delta_equiv_count_only_target_cells():
    model = approx_2d()
    batch = random_grid_batch(dtype=torch.float64)
    metrics = per_task_metrics(model, [EvaluationBatch(batch)])
    pred = model(batch)
    with aenp.strictly_equivariant(model):
        strict = model(batch).mean[..., 0].numpy()
    mean, std = pred.mean[..., 0].numpy(), pred.stddev[..., 0].numpy()
    y, targets = batch.y[..., 0].numpy(), batch.target_mask.numpy()
    for task in range(len(batch)):
        cells = targets[task]
        expected = gaussian_loglik(y[task][cells], mean[task][cells], std[task][cells]).mean()
        assert metrics["loglik"][task].item() == pytest.approx(expected, rel=1e-12)
        departure = np.abs(mean[task] - strict[task])[cells].mean()
        assert metrics["delta_equiv"][task].item() == pytest.approx(departure, rel=1e-12)
        assert departure > 0
    assert bool(metrics["context_loglik"].isnan().all())  # not defined for grids


@pytest.fixture
def departing():
    """A float64 ConvCNP (T̃) whose fixed inputs act, a batch of point sets, and the model's
    predictive means on it with the fixed inputs on and zeroed."""
    torch.manual_seed(0)
    model = aenp.build_model("convcnp_approx", 1, 1, domain=[[-1.0, 1.0]], **SMALL).double()
    torch.nn.init.normal_(model.backbone.fixed_inputs.projection.weight)
    batch = random_batch(3, num_target=20, dtype=torch.float64)
    with torch.no_grad():
        mean = model.eval()(batch).mean
        with aenp.strictly_equivariant(model):
            strict = model(batch).mean
    return model, batch, mean, strict


def test_delta_equiv_on_point_sets_is_the_mean_absolute_difference_of_the_means(departing):
    model, batch, mean, strict = departing
    metrics = per_task_metrics(model, [EvaluationBatch(batch)])
    expected = (mean - strict).abs()[..., 0].mean(1)
    np.testing.assert_allclose(metrics["delta_equiv"], expected, rtol=1e-12)


@torch.no_grad()
def test_departure_from_equivariance_is_the_absolute_difference_of_the_two_means(departing):
    model, batch, mean, strict = departing
    departure = departure_from_equivariance(model, batch)
    torch.testing.assert_close(departure, (mean - strict).abs(), rtol=0, atol=0)
    assert bool((mean < strict).any()) and bool((departure > 0).all())
    assert all(m.enabled for m in model.modules() if isinstance(m, FixedInputs))
    # Any way of computing μ from the inputs: called once when μ is given; arrays work too.
    calls = []

    def mean_of_context_points(model, xc, yc):
        calls.append(None)
        return model(xc, yc, xc).mean.numpy()

    with aenp.strictly_equivariant(model):
        given = mean_of_context_points(model, batch.xc, batch.yc) - 1.0
    shifted = departure_from_equivariance(
        model, batch.xc, batch.yc, mean=mean_of_context_points, as_trained=given
    )
    np.testing.assert_allclose(shifted, np.ones(given.shape), rtol=1e-12)
    assert len(calls) == 2


def test_gap_is_the_ground_truth_minus_the_model():
    model = aenp.build_model("convcnp", 1, 1, **SMALL).eval()
    items = split(16)
    metrics = per_task_metrics(model, items)
    truth = torch.cat([item.gt_loglik for item in items]).double()
    torch.testing.assert_close(metrics["gt_loglik"], truth)
    torch.testing.assert_close(metrics["gap"], truth - metrics["loglik"])
    assert bool((metrics["gap"] > 0).all())  # an untrained model is far from the truth


def test_stderr_needs_two_tasks_and_no_task_gives_no_mean():
    single = mean_and_stderr(torch.tensor([2.5]))
    assert (single["mean"], single["num_tasks"]) == (2.5, 1) and math.isnan(single["stderr"])
    empty = mean_and_stderr(torch.tensor([math.nan, math.nan]))
    assert empty["num_tasks"] == 0 and math.isnan(empty["mean"]) and math.isnan(empty["stderr"])
