"""Results tables on hand-made numbers."""

import math

import numpy as np

from aenp.evaluate.tables import ablation_table, comparisons_table


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
