"""Results tables on hand-made numbers."""

import math

import numpy as np
import pytest

from aenp.evaluate.tables import ablation_table, across_seeds, comparisons_table, results_table


def summary(mean, stderr=0.01):
    return {"mean": mean, "stderr": stderr, "num_tasks": 4}


def cells(line):
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_ablation_delta_is_each_row_minus_the_first_row_paired_over_tasks():
    first = np.array([-1.0, -0.5, 0.0, 0.5])
    per_task = {
        0: {"test": first},
        4: {"test": first + np.array([0.4, 0.6, 0.5, 0.5])},  # better by 0.5 on every task
        16: {"test": first - np.array([0.2, 0.4, 0.3, 0.3])},  # worse by 0.3
    }
    rows = [
        {
            "value": value,
            "model": "convcnp" if value == 0 else "convcnp_approx",
            "splits": {
                "test": {"loglik": summary(float(a["test"].mean())), "delta_equiv": summary(0.1)},
                "test_strict": {"loglik": summary(-9.0)},
            },
        }
        for value, a in per_task.items()
    ]
    lines = ablation_table("num_fixed_inputs", rows, per_task, "test", None).splitlines()
    assert cells(lines[0])[-1] == "Δ test vs num_fixed_inputs=0 (paired)"
    deltas = [cells(line)[-1] for line in lines[2:]]
    stderr = np.std([0.4, 0.6, 0.5, 0.5], ddof=1) / 2  # of the paired differences
    assert deltas[0] == "–"
    assert deltas[1] == f"0.500 ± {stderr:.3f} (better)"
    assert deltas[2] == f"-0.300 ± {stderr:.3f} (worse)"
    assert not math.isclose(stderr, np.std(per_task[4]["test"], ddof=1) / 2)  # truly paired
    assert cells(lines[3])[:4] == ["4", "ConvCNP (T̃)", "0.250 ± 0.010", "-9.000 ± 0.010"]


def test_ablation_table_has_both_splits_as_trained_and_zeroed():
    per_task = {0: {"test": np.zeros(4)}, 4: {"test": np.full(4, 0.5)}}
    rows = [
        {
            "value": value,
            "model": "convcnp_approx",
            "splits": {
                "test": {"loglik": summary(0.25 * value), "delta_equiv": summary(0.1)},
                "ood": {"loglik": summary(-1.0 - value)},
                "ood_strict": {"loglik": summary(-2.0)},
            },
        }
        for value in per_task
    ]
    lines = ablation_table("num_fixed_inputs", rows, per_task, "test", "ood").splitlines()
    assert cells(lines[0]) == [
        "num_fixed_inputs",
        "model",
        "test log-lik",
        "test, zeroed",
        "ood log-lik",
        "ood, zeroed",
        "Δequiv (test)",
        "Δ test vs num_fixed_inputs=0 (paired)",
    ]
    assert cells(lines[3])[:6] == [
        "4",
        "ConvCNP (T̃)",
        "1.000 ± 0.010",
        "–",
        "-5.000 ± 0.010",
        "-2.000 ± 0.010",
    ]


def test_comparisons_in_and_out_of_distribution_with_the_paired_difference_and_verdict():
    rng = np.random.default_rng(0)
    base = {"test": rng.normal(size=4), "ood": rng.normal(size=4)}
    differences = {
        "test": np.array([0.4, 0.6, 0.5, 0.5]),
        "ood": -np.array([0.2, 0.4, 0.3, 0.3]),
        "ood_strict": np.array([0.2, -0.1, 0.1, -0.1]),
    }
    approximate = {
        split: base[split.removesuffix("_strict")] + difference
        for split, difference in differences.items()
    }
    table = comparisons_table({"convcnp": base, "convcnp_approx": approximate}, "test", "ood")

    def estimate(split):
        d = differences[split]
        return f"{d.mean():.3f} ± {np.std(d, ddof=1) / np.sqrt(len(d)):.3f}"

    assert table.splitlines() == [
        "| model | compared with | split | Δ log-lik (paired) | verdict |",
        "|---|---|---|---|---|",
        f"| ConvCNP (T̃) | ConvCNP (T) | test | {estimate('test')} | better |",
        f"| ConvCNP (T̃) | ConvCNP (T) | ood | {estimate('ood')} | worse |",
        f"| ConvCNP (T̃), fixed inputs zeroed | ConvCNP (T) | ood | {estimate('ood_strict')} "
        "| no significant difference |",
    ]


def run(model, means, seed=0):
    """A hand-made ``evaluate_run`` result of one seed: ``means`` per split and metric."""
    splits = {
        split: {m: summary(v) for m, v in metrics.items()} for split, metrics in means.items()
    }
    return {"model": model, "seed": seed, "splits": splits}


GP_METRICS = ("loglik", "gap", "rmse", "context_loglik", "gt_loglik", "oracle_loglik")


def gp_run(model, offset, seed=0):
    """A gp1d-like result whose every metric is ``offset`` plus a metric-specific constant."""
    means = {
        split: {m: offset + i / 10 for i, m in enumerate(GP_METRICS)} for split in ("test", "ood")
    }
    means["test"]["delta_equiv"] = offset + 0.7
    return run(model, means, seed)


def test_results_table_of_one_run_per_model_is_as_before_seeds():
    results = [gp_run("convcnp", 0.0), gp_run("convcnp_approx", 1.0)]
    results[1]["splits"]["test_strict"] = {"loglik": summary(-3.0)}
    results[1]["splits"]["ood_strict"] = {"loglik": summary(-4.0)}
    lines = results_table(results, "test", "ood").splitlines()
    assert lines == [
        "| Model | test log-lik | ood log-lik | gap to GT (test) | test RMSE | ood RMSE "
        "| context log-lik (test) | Δequiv (test) |",
        "|---|---|---|---|---|---|---|---|",
        "| Ground truth (mixture) | 0.400 ± 0.010 | 0.400 ± 0.010 | 0 | – | – | – | – |",
        "| Oracle (true kernel) | 0.500 ± 0.010 | 0.500 ± 0.010 | – | – | – | – | – |",
        "| ConvCNP (T) | 0.000 ± 0.010 | 0.000 ± 0.010 | 0.100 ± 0.010 | 0.200 ± 0.010 "
        "| 0.200 ± 0.010 | 0.300 ± 0.010 | 0.700 ± 0.010 |",
        "| ConvCNP (T̃) | 1.000 ± 0.010 | 1.000 ± 0.010 | 1.100 ± 0.010 | 1.200 ± 0.010 "
        "| 1.200 ± 0.010 | 1.300 ± 0.010 | 1.700 ± 0.010 |",
        "| ConvCNP (T̃), fixed inputs zeroed | -3.000 ± 0.010 | -4.000 ± 0.010 | – | – | – | – "
        "| – |",
    ]


def test_results_table_puts_the_across_seed_mean_and_stderr_beside_each_column():
    rng = np.random.default_rng(1)
    offsets = {"tnp": rng.normal(size=3), "tetnp_approx": rng.normal(size=3)}
    results = [gp_run(m, o, seed) for m, seeds in offsets.items() for seed, o in enumerate(seeds)]
    for seed, result in enumerate(results[3:]):
        result["splits"]["test_strict"] = {"loglik": summary(-2.0 - seed)}
        result["splits"]["ood_strict"] = {"loglik": summary(-5.0 * seed)}
    lines = results_table(results, "test", "ood").splitlines()
    header = cells(lines[0])
    assert header[:5] == [
        "Model",
        "test log-lik",
        "test log-lik, 3 seeds",
        "ood log-lik",
        "ood log-lik, 3 seeds",
    ]
    assert header[-2:] == ["Δequiv (test)", "Δequiv (test), 3 seeds"]
    rows = {cells(line)[0]: dict(zip(header, cells(line), strict=True)) for line in lines[2:]}

    def over_seeds(values):
        values = np.asarray(values)
        return f"{values.mean():.3f} ± {values.std(ddof=1) / np.sqrt(len(values)):.3f}"

    tnp, approx = offsets["tnp"], offsets["tetnp_approx"]
    assert rows["TNP"]["test log-lik"] == f"{tnp[0]:.3f} ± 0.010"  # the first seed's
    assert rows["TNP"]["test log-lik, 3 seeds"] == over_seeds(tnp)
    assert rows["TNP"]["ood RMSE, 3 seeds"] == over_seeds(tnp + 0.2)
    assert rows["TNP"]["Δequiv (test), 3 seeds"] == over_seeds(tnp + 0.7)
    assert rows["TE-TNP (T̃)"]["gap to GT (test), 3 seeds"] == over_seeds(approx + 0.1)
    zeroed = rows["TE-TNP (T̃), fixed inputs zeroed"]
    assert zeroed["test log-lik, 3 seeds"] == over_seeds([-2.0, -3.0, -4.0])
    assert zeroed["ood log-lik, 3 seeds"] == over_seeds([0.0, -5.0, -10.0])
    truth = rows["Ground truth (mixture)"]
    assert truth["test log-lik"] == f"{tnp[0] + 0.4:.3f} ± 0.010"
    assert truth["test log-lik, 3 seeds"] == "–"


def test_across_seeds_is_nan_when_a_seed_is_nan_and_counts_the_seeds():
    runs = [run("tnp", {"test": {"loglik": v}}) for v in (1.0, math.nan, 2.0)]
    spread = across_seeds(runs)["test"]["loglik"]
    assert math.isnan(spread["mean"]) and spread["num_seeds"] == 3
    spread = across_seeds(runs[::2])["test"]["loglik"]
    assert spread == {"mean": 1.5, "stderr": pytest.approx(0.5), "num_seeds": 2}


def comparison(per_task):
    """The cells of the one in-distribution row of a TE-TNP (T̃) against TE-TNP (T) table."""
    lines = comparisons_table(per_task, "test", None).splitlines()
    assert len(lines) == 3
    return dict(zip(cells(lines[0]), cells(lines[2]), strict=True))


def test_comparisons_across_seeds_pair_each_seed_and_need_both_figures_for_a_verdict():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(3, 8))
    # Seed 0 gains 0.5 on every task, clearly; the other seeds disagree with each other.
    gains = np.array([0.5, -0.6, 0.7])[:, None] + rng.normal(scale=0.01, size=(3, 8))
    row = comparison({"tetnp": {"test": base}, "tetnp_approx": {"test": base + gains}})
    first = gains[0]
    per_seed = gains.mean(axis=1)
    assert row["Δ log-lik (paired)"] == (
        f"{first.mean():.3f} ± {first.std(ddof=1) / np.sqrt(8):.3f}"
    )
    assert row["Δ log-lik (paired), 3 seeds"] == (
        f"{per_seed.mean():.3f} ± {per_seed.std(ddof=1) / np.sqrt(3):.3f}"
    )
    assert row["verdict"] == "no significant difference"  # seed 0 alone would say better
    agreeing = np.array([0.5, 0.45, 0.55])[:, None] + rng.normal(scale=0.01, size=(3, 8))
    row = comparison({"tetnp": {"test": base}, "tetnp_approx": {"test": base - agreeing}})
    assert row["verdict"] == "worse"


def test_comparisons_of_one_seed_as_a_row_are_those_of_a_flat_array():
    rng = np.random.default_rng(3)
    flat = {"tetnp": {"test": rng.normal(size=8)}, "tetnp_approx": {"test": rng.normal(size=8)}}
    rows = {k: {s: a[None] for s, a in v.items()} for k, v in flat.items()}
    assert comparisons_table(rows, "test", None) == comparisons_table(flat, "test", None)
    assert "seeds" not in comparisons_table(rows, "test", None)
