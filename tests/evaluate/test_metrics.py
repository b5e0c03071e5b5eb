import math

import numpy as np
import torch

import aenp
from aenp.data.experiments import EvaluationBatch, get_experiment
from aenp.evaluate.metrics import evaluate_splits, mean_and_stderr, per_task_metrics
from aenp.evaluate.tables import results_table
from aenp.nn.fixed_inputs import FixedInputs

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
    strict = evaluate_splits(aenp.build_model("convcnp", 1, 1, **SMALL), splits)
    approx = evaluate_splits(aenp.build_model("convcnp_approx", 1, 1, **SMALL), splits)
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
